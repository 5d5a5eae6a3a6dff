"""What a server says it is: primary or replica, and how far behind its primary it replays.

Roles are discovered, never assumed (like libpq's ``target_session_attrs``):

- PostgreSQL: ``pg_is_in_recovery()``. Replay lag is ``now() - pg_last_xact_replay_timestamp()``
  while received WAL waits to be replayed, and 0 once everything received is replayed (an idle
  primary sends nothing, so the last replayed transaction's age alone would grow forever).
- MariaDB / MySQL: ``@@read_only`` (a replica runs read-only; writes then fail on it anyway).
  Lag is ``Seconds_Behind_Master`` (``_Source`` on MySQL) of ``SHOW SLAVE STATUS`` (``SHOW
  REPLICA STATUS`` on MySQL), which needs the ``SLAVE MONITOR`` (MariaDB) or ``REPLICATION
  CLIENT`` (MySQL) privilege. NULL there means the SQL thread is stopped: lag unknown.

Unknown lag (``None``) is treated as past any ``maxReplicaLagSeconds``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from app.domain import DbType

__all__ = ["NodeRole", "RoleReport", "probe_role"]

NodeRole = Literal["primary", "replica", "unknown"]

_PG_ROLE = (
    "SELECT pg_is_in_recovery() AS recovering, CASE WHEN NOT pg_is_in_recovery() THEN 0 "
    "WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 "
    "ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) END AS lag"
)
_MY_ROLE = "SELECT @@read_only AS read_only"
_MY_STATUS = {DbType.MARIADB: "SHOW SLAVE STATUS", DbType.MYSQL: "SHOW REPLICA STATUS"}
_MY_LAG_COLUMNS = ("Seconds_Behind_Master", "Seconds_Behind_Source")

Inspect = Callable[[str], Awaitable[Sequence[Mapping[str, Any]] | None]]


@dataclass(frozen=True, slots=True)
class RoleReport:
    """One node's answer; ``lag_seconds`` is ``None`` when it cannot be measured."""

    role: NodeRole
    lag_seconds: float | None


async def probe_role(db_type: DbType, inspect: Inspect) -> RoleReport | None:
    """Ask the server through ``inspect`` (one monitoring statement on a pooled connection);
    ``None`` when the node had no free slot to ask on. Connection failures propagate."""
    if db_type is DbType.POSTGRESQL:
        rows = await inspect(_PG_ROLE)
        if not rows:
            return None
        row = rows[0]
        lag = row["lag"]
        role: NodeRole = "replica" if row["recovering"] else "primary"
        return RoleReport(role, None if lag is None else max(0.0, float(lag)))
    rows = await inspect(_MY_ROLE)
    if not rows:
        return None
    if not int(rows[0]["read_only"]):
        return RoleReport("primary", 0.0)
    return RoleReport("replica", await _mysql_lag(db_type, inspect))


async def _mysql_lag(db_type: DbType, inspect: Inspect) -> float | None:
    try:
        rows = await inspect(_MY_STATUS[db_type])
    except Exception:  # no privilege to read the replica status: lag unknown
        return None
    if not rows:
        return None
    for column in _MY_LAG_COLUMNS:
        value = rows[0].get(column)
        if value is not None:
            return float(value)
    return None
