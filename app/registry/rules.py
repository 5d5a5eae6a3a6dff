"""The registry's invariants, checked before a write so errors name the offending field.

The table's CHECK constraints say the same; these run first to give a clear message
(field names in camelCase, the API's spelling).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from app.domain import (
    MAX_CONNECTIONS_LIMIT,
    MAX_NAME_LENGTH,
    MAX_REPLICAS,
    DbType,
    ReplicaNode,
)
from app.errors import ValidationFailed
from app.registry.models import ExternalDbConnection

__all__ = [
    "check_row",
    "coerce_db_type",
    "new_replica_addresses",
    "require_password_for_new_server",
]

_DB_TYPES = frozenset(db_type.value for db_type in DbType)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _require(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise ValidationFailed(message, details={"field": _camel(field)})


def coerce_db_type(value: object) -> str:
    """``value`` as a stored ``db_type`` string; ``ValidationFailed`` for anything else."""
    if isinstance(value, str) and value in _DB_TYPES:
        return DbType(value).value
    raise ValidationFailed(
        f"dbType must be one of: {', '.join(sorted(_DB_TYPES))}", details={"field": "dbType"}
    )


def check_row(row: ExternalDbConnection) -> None:
    """Raise ``ValidationFailed`` naming the first field of ``row`` that breaks a rule."""
    name_ok = 0 < len(row.name.strip()) <= MAX_NAME_LENGTH
    _require(name_ok, "name", f"name must be 1 to {MAX_NAME_LENGTH} characters")
    _require(bool(row.host.strip()), "host", "host must not be empty")
    _require(1 <= row.port <= 65535, "port", "port must be between 1 and 65535")
    _require(
        1 <= row.max_connections <= MAX_CONNECTIONS_LIMIT,
        "max_connections",
        f"maxConnections must be between 1 and {MAX_CONNECTIONS_LIMIT}",
    )
    _require(
        0 <= row.min_connections <= row.max_connections,
        "min_connections",
        f"minConnections ({row.min_connections}) must be between 0 and "
        f"maxConnections ({row.max_connections})",
    )
    _require(row.connection_timeout > 0, "connection_timeout", "connectionTimeout must be > 0")
    _require(row.query_timeout > 0, "query_timeout", "queryTimeout must be > 0")
    lag = row.max_replica_lag_seconds
    _require(lag is None or lag > 0, "max_replica_lag_seconds",
             "maxReplicaLagSeconds must be > 0 (or null: no bound)")
    replicas = row.replicas or []
    _require(len(replicas) <= MAX_REPLICAS, "replicas", f"at most {MAX_REPLICAS} replicas")
    addresses = [(row.host, row.port), *((r["host"], r["port"]) for r in replicas)]
    _require(len(set(addresses)) == len(addresses), "replicas",
             "each replica needs its own host:port, different from the registration's")


def require_password_for_new_server(
    row: ExternalDbConnection, values: Mapping[str, Any], *, password_given: bool
) -> None:
    """Stored credentials are never replayed to a different server."""
    moves = any(key in values and values[key] != getattr(row, key) for key in ("host", "port"))
    if moves and not password_given:
        raise ValidationFailed(
            "changing host or port requires the password again", details={"field": "password"}
        )


def new_replica_addresses(
    replicas: Sequence[ReplicaNode], stored: Sequence[Mapping[str, Any]]
) -> list[tuple[str, int]]:
    """Addresses in ``replicas`` that were not stored before and bring no password of their
    own: they would be sent the registration's stored password."""
    known = {(r["host"], r["port"]) for r in stored}
    return [
        (r.host, r.port) for r in replicas
        if r.password is None and (r.host, r.port) not in known
    ]
