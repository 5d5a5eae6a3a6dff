"""Who is open and who is lent out.

Open connections come from SQLAlchemy's own pool events (connect / close), kept as a set of
pool records rather than a counter, so an event pair that does not match up (a connect that
failed half-way, a reconnect of the same record) cannot drift the figure. A pooled socket
the server already closed is not counted as open.

Lent ones are marked by the lender (``app.pools.lender``) in the record's info: connections
stay checked out of SQLAlchemy's pool between requests, so its checkout and checkin events
no longer mean lend and return. Checked out = lent now; idle = open and not lent (in the
lender or in SQLAlchemy's pool).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import ConnectionPoolEntry

from app.pools.session_reset import peer_closed

__all__ = ["IDLE_SINCE", "LENT", "PoolAccounting"]

log = logging.getLogger(__name__)

IDLE_SINCE = "dbpool_idle_since"  # record.info key: clock() when it last went idle
LENT = "dbpool_lent"  # record.info key: True while lent (a reconnect clears the info)
_CONNECT_STARTED = "dbpool_connect_started"  # record.info key: clock() when connecting began


class PoolAccounting:
    """Live figures of one engine's pool, fed by its pool events."""

    def __init__(
        self,
        engine: AsyncEngine,
        clock: Callable[[], float],
        name: str,
        *,
        on_create: Callable[[float], None] | None = None,
    ) -> None:
        self._clock = clock
        self._name = name
        self._on_create = on_create
        self._open: set[ConnectionPoolEntry] = set()
        self._attach(engine)

    def _attach(self, engine: AsyncEngine) -> None:
        target = engine.sync_engine
        event.listen(target, "do_connect", self._on_do_connect)
        event.listen(target, "connect", self._on_connect)
        event.listen(target, "close", self._on_close)
        event.listen(target, "invalidate", self._on_invalidate)

    def _on_do_connect(
        self, dialect: Any, record: ConnectionPoolEntry, cargs: Any, cparams: Any
    ) -> None:
        # Only the start time: cparams holds the password and is never looked at or logged.
        record.info[_CONNECT_STARTED] = self._clock()

    def _on_connect(self, dbapi_conn: Any, record: ConnectionPoolEntry) -> None:
        self._open.add(record)
        now = self._clock()
        record.info[IDLE_SINCE] = now
        started = record.info.pop(_CONNECT_STARTED, None)
        if started is not None and self._on_create is not None:
            self._on_create(max(0.0, now - started))

    def _on_close(self, dbapi_conn: Any, record: ConnectionPoolEntry) -> None:
        self._open.discard(record)

    def lend(self, info: dict[str, Any]) -> None:
        """The connection with this record ``info`` is lent from now on."""
        info[LENT] = True

    def returned(self, info: dict[str, Any], *, idle_since: bool = True) -> None:
        """It is idle again (``idle_since``: from now; else it keeps its earlier idle time)."""
        info[LENT] = False
        if idle_since:
            info[IDLE_SINCE] = self._clock()

    def _on_invalidate(self, dbapi_conn: Any, record: ConnectionPoolEntry, error: Any) -> None:
        log.debug("connection invalidated", extra={"pool": self._name})

    def forget(self, record: ConnectionPoolEntry) -> None:
        """A record closed outside the pool's own path (forced after a failed close)."""
        self._open.discard(record)

    def counts(self) -> tuple[int, int]:
        """``(open, checked_out)`` from one pass over the records (snapshots, metrics)."""
        live = [record for record in self._open if not peer_closed(record)]
        return len(live), sum(1 for record in live if record.info.get(LENT))

    @property
    def open(self) -> int:
        """Connections open to the database (what the database itself counts)."""
        return self.counts()[0]

    @property
    def checked_out(self) -> int:
        """Open connections lent to requests now."""
        return self.counts()[1]
