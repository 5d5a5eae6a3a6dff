"""A request's work on one node, measured: what every statement a caller sends goes through.

    PoolManager.run(id, work) ─> pool.run / cluster.route ─> measured(work)(node, conn)
                                  (lend, retry on SentNothing,     │ span ``operation``
                                   pick the node, release)         │ work(node, conn)
                                                                   └ errors and duration
                                                                     counted on the node

``work`` sees the node only as a :class:`QueryNode`: its config and how to discard a
connection that must not be reused; lending, retrying and accounting stay here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from app.domain import ConnectionConfig
from app.errors import DbPoolError
from app.pools.managed_pool import ManagedPool
from app.pools.stale import SentNothing
from app.tracing import Tracing

__all__ = ["QueryNode", "Work", "measured"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class QueryNode(Protocol):
    """The node a request's work runs on, as the work sees it."""

    @property
    def config(self) -> ConnectionConfig:
        """The node's connection settings (a replica's carry its own address)."""
        ...

    async def discard(self, conn: AsyncConnection) -> None:
        """Never reuse ``conn`` (its statement is stopped on the server first)."""
        ...


Work = Callable[[QueryNode, AsyncConnection], Awaitable[T]]
"""A request's work on one lent connection of ``node``."""


def measured(work: Work[T], tracing: Tracing, operation: str,
             statements: Sequence[str]) -> Callable[[ManagedPool, AsyncConnection], Awaitable[T]]:
    """``work`` traced as ``operation`` on ``statements`` (the caller's SQL; none for our own
    catalogue reads), its duration and failures counted on the node, failures logged (id,
    code, node; never parameters). ``SentNothing`` passes uncounted: the pool retries."""

    async def on_node(node: ManagedPool, conn: AsyncConnection) -> T:
        started = time.perf_counter()
        try:
            with tracing.query_span(node.config, operation, statements):
                return await work(node, conn)
        except SentNothing:
            raise  # not a query failure: the pool retries on a fresh connection
        except DbPoolError as exc:
            node.record_query_error(exc.code)
            log.warning("query failed", extra={"connection_id": node.config.id,
                                               "code": exc.code, "node": node.config.node})
            raise
        finally:
            node.record_query(time.perf_counter() - started)

    return on_node
