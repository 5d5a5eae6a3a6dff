"""Bodies and results of the query, transaction, tables and test endpoints (camelCase)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from app.api.schemas.common import ApiModel

__all__ = [
    "ConnectionTestPublic",
    "NodePublic",
    "QueryRequest",
    "QueryResultPublic",
    "StatementRequest",
    "StatementResultPublic",
    "TablePublic",
    "TransactionRequest",
    "TransactionResultPublic",
]

_SQL = Field(
    min_length=1,
    max_length=1_000_000,
    description="Exactly one statement (a trailing `;` and comments are fine)",
    examples=["SELECT * FROM items WHERE id = :id"],
)
_PARAMS = Field(
    default=None,
    description="An object binds the named `:name` placeholders (portable; never one inside "
    "a literal, quoted identifier or comment; `:id::int` binds then casts; a name used "
    "twice binds the same value); an array binds the driver's positional style (`$1` on "
    "PostgreSQL, `%s` on MySQL/MariaDB, where every other `%` must be `%%`).",
    examples=[{"id": 1}],
)
_MAX_ROWS = Field(default=None, ge=1, description="Default 1000; capped by DBPOOL_MAX_ROWS")
_TIMEOUT = Field(
    default=None,
    gt=0,
    le=86400,
    description="Tightens the connection's query timeout; never loosens it",
)
_ROW_FORMAT_HELP = "Rows as objects keyed by column, or arrays"
_NODE_HELP = "The node that answered (registrations with replicas; null otherwise)"


class QueryRequest(ApiModel):
    sql: str = _SQL
    params: dict[str, Any] | list[Any] | None = _PARAMS
    max_rows: int | None = _MAX_ROWS
    timeout_seconds: float | None = _TIMEOUT
    row_format: Literal["object", "array"] = Field(default="object", description=_ROW_FORMAT_HELP)
    target: Literal["auto", "primary", "replica"] = Field(
        default="auto",
        description="Registrations with replicas: `auto` sends statements the analyser proves "
        "read-only to a healthy replica within `maxReplicaLagSeconds` (the primary when none "
        "is usable) and everything else to the primary; `primary` / `replica` pick the role "
        "(`replica` never falls back: 503 DB_UNAVAILABLE when no replica is usable). Ignored "
        "by single-node registrations.",
    )


class NodePublic(ApiModel):
    """Which node of the registration answered: never its address or credentials."""

    id: str = Field(examples=["node1"], description="node0: the registered host; node1...: "
                    "the replicas in registration order")
    role: Literal["primary", "replica", "unknown"]


class StatementRequest(ApiModel):
    sql: str = _SQL
    params: dict[str, Any] | list[Any] | None = _PARAMS


class TransactionRequest(ApiModel):
    statements: list[StatementRequest] = Field(min_length=1, max_length=1000)
    isolation_level: (
        Literal["READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE", "READ UNCOMMITTED"] | None
    ) = Field(default=None, description="READ UNCOMMITTED: MySQL/MariaDB only")
    max_rows: int | None = _MAX_ROWS
    timeout_seconds: float | None = Field(
        default=None, gt=0, le=86400, description="Bounds the whole transaction"
    )
    row_format: Literal["object", "array"] = Field(default="object", description=_ROW_FORMAT_HELP)
    read_only: bool = Field(
        default=False,
        description="Run as on a read-only connection (a read-only transaction; writes are "
        "refused with 403 READ_ONLY); with replicas it may then go to a replica",
    )


class StatementResultPublic(ApiModel):
    columns: list[str]
    rows: list[Any]
    row_count: int = Field(description="Rows returned, or rows affected by a write")
    truncated: bool = Field(description="More rows existed than maxRows")


class QueryResultPublic(StatementResultPublic):
    duration_ms: float
    node: NodePublic | None = Field(default=None, description=_NODE_HELP)


class TransactionResultPublic(ApiModel):
    results: list[StatementResultPublic]
    duration_ms: float
    node: NodePublic | None = Field(default=None, description=_NODE_HELP)


class TablePublic(ApiModel):
    schema_name: str = Field(alias="schema")
    name: str
    type: Literal["table", "view"]


class ConnectionTestPublic(ApiModel):
    ok: bool
    latency_ms: float
    server_version: str
    can_write: bool | None = Field(
        description="Whether the stored login could write (null: the server would not say). "
        "A readOnly connection is kept read-only by dbpool either way"
    )
