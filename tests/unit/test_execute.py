"""``execute.measured``: what the pool layer counts, logs and lets through around a request's
work (a fake node; the real pools and routes are covered by tests/integration)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from app.domain import ConnectionConfig
from app.errors import QueryError
from app.pools.execute import QueryNode, measured
from app.pools.managed_pool import ManagedPool
from app.pools.stale import SentNothing
from app.tracing import NO_TRACING


class _Config:
    id = 7
    node = "node1"


class _Node:
    """The calls ``measured`` makes on a node, recorded."""

    def __init__(self) -> None:
        self.config = cast(ConnectionConfig, _Config())
        self.errors: list[str] = []
        self.durations: list[float] = []

    def record_query_error(self, code: str) -> None:
        self.errors.append(code)

    def record_query(self, seconds: float) -> None:
        self.durations.append(seconds)


def _run(node: _Node, outcome: BaseException | None) -> Any:
    async def work(seen: QueryNode, conn: AsyncConnection) -> str:
        assert seen is node
        if outcome is not None:
            raise outcome
        return "rows"

    on_node = measured(work, NO_TRACING, "query", ("SELECT 1",))
    return asyncio.run(on_node(cast(ManagedPool, node), cast(AsyncConnection, None)))


def test_a_success_is_timed_once_and_not_counted_as_an_error() -> None:
    node = _Node()
    assert _run(node, None) == "rows"
    assert node.errors == [] and len(node.durations) == 1 and node.durations[0] >= 0


def test_a_failure_is_counted_by_code_and_logged_without_the_sql(
    caplog: pytest.LogCaptureFixture,
) -> None:
    node = _Node()
    with caplog.at_level(logging.WARNING, "app.pools.execute"), \
            pytest.raises(QueryError):
        _run(node, QueryError("relation does not exist"))
    assert node.errors == ["QUERY_ERROR"] and len(node.durations) == 1
    [record] = [r for r in caplog.records if r.getMessage() == "query failed"]
    assert (record.connection_id, record.code, record.node) == (7, "QUERY_ERROR", "node1")
    assert "SELECT" not in caplog.text


def test_a_dead_connection_passes_through_uncounted_for_the_pool_to_retry() -> None:
    node = _Node()
    with pytest.raises(SentNothing):
        _run(node, SentNothing("closed before sending"))
    assert node.errors == []  # not a query failure; the retry on a fresh connection counts
