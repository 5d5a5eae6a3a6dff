"""Running SQL on a registered connection: query, transaction, tables, rows, test.

Each request is one call to the pool layer (``PoolManager.run``), which lends one pooled
connection (released when the response is ready), picks the node, retries a connection found
dead before sending, and counts, logs and traces the work; this module builds the work and the
response.
A statement still running after ``WATCH_AFTER_SECONDS`` gets a watcher on its client: a
disconnect cancels the work unless it ends by itself within ``HANG_UP_GRACE_SECONDS``, and
the query path then cancels the statement on the server and discards the connection.

The grace is what keeps a burst of hang-ups (a load balancer or a workflow engine closing
every connection at once) from discarding every connection of a pool: a short statement
ends within it and its connection goes back clean. A MySQL/MariaDB statement cancelled
mid-flight needs a ``KILL QUERY`` from another connection of the same pool (``cancel.py``);
with every connection holding one, no kill could go out until the statements' own time
limit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Query, Request, Response
from pydantic_core import to_json
from sqlalchemy.ext.asyncio import AsyncConnection

from app.api.deps import ConnectionId, QueryParts
from app.api.direct import DirectRoute, direct
from app.api.schemas.common import Envelope, ErrorEnvelope
from app.api.schemas.queries import (
    ConnectionTestPublic,
    NodePublic,
    QueryRequest,
    QueryResultPublic,
    StatementResultPublic,
    TablePublic,
    TransactionRequest,
    TransactionResultPublic,
)
from app.domain import DbType
from app.errors import DbPoolError
from app.pools import NodeRef, QueryNode
from app.pools.budget import ResultBudget
from app.pools.catalogue import can_write, list_tables, read_rows
from app.pools.query import (
    QueryResult,
    Statement,
    TransactionResult,
    run_query,
    run_transaction,
)
from app.settings import Settings
from app.sql import analyse

__all__ = ["router"]

log = logging.getLogger(__name__)

PREFIX = "/api/external-db-connections"
DEFAULT_MAX_ROWS = 1000
CLIENT_CLOSED_REQUEST = 499  # nginx's code: nobody reads it, the logs do
WATCH_AFTER_SECONDS = 0.05
HANG_UP_GRACE_SECONDS = 0.5  # a client gone: its work may still end by itself this long

T = TypeVar("T")

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorEnvelope, "description": text}
    for code, text in {
        400: "The database rejected the SQL (QUERY_ERROR): details carry sqlstate/errno",
        401: "Missing or unknown bearer token (UNAUTHORIZED)",
        403: "A write, or a statement that could change the session or the transaction "
        "(SET, BEGIN, DDL, an unknown kind ...), on a read-only connection (READ_ONLY)",
        404: "No such connection (CONNECTION_NOT_FOUND) or table (TABLE_NOT_FOUND)",
        409: "The connection is inactive (CONNECTION_INACTIVE)",
        413: "Request body over the size limit (PAYLOAD_TOO_LARGE), or the result passes "
        "DBPOOL_MAX_RESPONSE_BYTES or the transaction's total-row cap (RESULT_TOO_LARGE)",
        422: "A field failed validation (VALIDATION_ERROR): a missing parameter, more than "
        "one statement, unreadable SQL, transaction control inside /transaction",
        502: "The database refused the credentials (DB_AUTH_FAILED)",
        503: "No connection in time (POOL_EXHAUSTED), database down or its circuit open, or no "
        "usable node for the target (DB_UNAVAILABLE; a write with no reachable primary fails "
        "fast), or a new pool needs the unreachable registry (REGISTRY_UNAVAILABLE); "
        "Retry-After says when to try again",
        504: "The statement ran past its timeout and was cancelled (QUERY_TIMEOUT)",
    }.items()
}

# /query, the hot path, skips FastAPI's generic request handling when it can (``direct``).
router = APIRouter(prefix=PREFIX, tags=["queries"], responses=_ERRORS, route_class=DirectRoute)


def _max_rows(requested: int | None, settings: Settings) -> int:
    return min(requested or DEFAULT_MAX_ROWS, settings.max_rows)


def _node(ref: NodeRef | None) -> dict[str, str] | None:
    return None if ref is None else {"id": ref.id, "role": ref.role}


class _DisconnectWatch:
    """Cancels ``task`` when the client hangs up and the work has not ended by itself
    ``HANG_UP_GRACE_SECONDS`` later, from a watcher task started only once the work has run
    ``WATCH_AFTER_SECONDS``: most statements finish sooner and never pay for a task."""

    __slots__ = ("_request", "_task", "_timer", "_watcher", "done", "gone")

    def __init__(self, request: Request, task: asyncio.Task[Any]) -> None:
        self._request = request
        self._task = task
        self._watcher: asyncio.Task[None] | None = None
        self.done = False
        self.gone = False
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(WATCH_AFTER_SECONDS, self._start)

    def _start(self) -> None:
        if not self.done:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        await _disconnected(self._request)
        if self.done:
            return
        self.gone = True
        await asyncio.sleep(HANG_UP_GRACE_SECONDS)  # work that ends meanwhile stops this watcher
        if not self.done:
            self._task.cancel()

    def stop(self) -> None:
        self.done = True
        self._timer.cancel()
        if self._watcher is not None:
            self._watcher.cancel()


async def _watched(request: Request, work: Awaitable[T]) -> T | Response:
    """``work``, cancelled when the client disconnects first (its statement with it)."""
    me = asyncio.current_task()
    assert me is not None
    watch = _DisconnectWatch(request, me)
    try:
        return await work
    except (asyncio.CancelledError, DbPoolError):
        if not watch.gone:
            raise
        me.uncancel()
        log.info("client disconnected; its statement was cancelled")
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    finally:
        watch.stop()


async def _disconnected(request: Request) -> None:
    # The body has been read already; the next message is the disconnect (or never comes).
    while (await request.receive())["type"] != "http.disconnect":
        pass


@router.post(
    "/{connection_id}/query",
    summary="Run one statement",
    response_model=Envelope[QueryResultPublic],
    description="Rows beyond `maxRows` are not read: `truncated` says so. "
    "Writes report affected rows in `rowCount`. One statement only (422 otherwise, "
    "nothing sent). On a `readOnly` connection it runs in a read-only transaction, and "
    "statements that could change the session or the transaction are refused (403). "
    "With replicas, `target` picks the node (`auto`: proven reads to a replica, the rest "
    "to the primary) and `data.node` says which node answered.",
)
@direct
async def query(
    connection_id: ConnectionId,
    body: QueryRequest,
    request: Request,
    parts: QueryParts,
) -> Envelope[QueryResultPublic] | Response:
    async def work(node: QueryNode, conn: AsyncConnection) -> tuple[QueryResult, bytes]:
        budget = ResultBudget(parts.settings.max_response_bytes, keep_json=True)
        result = await run_query(
            conn,
            node.config,
            body.sql,
            body.params,
            max_rows=_max_rows(body.max_rows, parts.settings),
            timeout_seconds=body.timeout_seconds,
            row_format=body.row_format,
            discard=node.discard,
            budget=budget,
        )
        return result, budget.rows_json()

    def reads(db_type: DbType) -> bool:
        return analyse(body.sql, db_type).read_only

    async def answer() -> Response:
        (result, rows_json), node = await parts.pools.run(
            connection_id, work, operation="query", statements=(body.sql,),
            target=body.target, read=reads if body.target == "auto" else False,
        )
        return _query_response(result, rows_json, _node(node))

    return await _watched(request, answer())


def _query_response(result: QueryResult, rows_json: bytes, node: dict[str, str] | None
                    ) -> Response:
    """The ``Envelope[QueryResultPublic]`` body around ``rows_json``, the rows as the budget
    measured them (so they are serialized once, by pydantic-core).

    The rows are JSON-ready already (``encode_rows``), so validating them again through the
    response model would only cost time; ``response_model`` still documents the shape.
    """
    data = to_json({
        "columns": result.columns,
        "rowCount": result.row_count,
        "truncated": result.truncated,
        "durationMs": result.duration_ms,
        "node": node,
    })
    body = b"".join((b'{"success":true,"data":{"rows":', rows_json, b",", data[1:],
                     b',"message":', to_json(f"{result.row_count} rows"), b"}"))
    return Response(body, media_type="application/json")


@router.post(
    "/{connection_id}/transaction",
    summary="Run statements in one transaction",
    response_model=Envelope[TransactionResultPublic],
    description="All on one connection, committed together or rolled back together; "
    "a failure names the statement in `details.statementIndex`. The endpoint owns BEGIN "
    "and COMMIT: transaction control among the statements (BEGIN, COMMIT, ROLLBACK, SET "
    "TRANSACTION, LOCK TABLES, XA, ...) is refused with 422, and on MySQL/MariaDB so are "
    "DDL and unknown statements (they commit implicitly); savepoints are allowed. "
    "With replicas it runs on the primary, unless `readOnly` (a read-only transaction, "
    "which a replica may serve).",
)
async def transaction(
    connection_id: ConnectionId,
    body: TransactionRequest,
    request: Request,
    parts: QueryParts,
) -> Envelope[TransactionResultPublic] | Response:
    statements = [Statement(sql=s.sql, params=s.params) for s in body.statements]

    async def work(node: QueryNode, conn: AsyncConnection) -> TransactionResult:
        return await run_transaction(
            conn,
            node.config,
            statements,
            max_rows=_max_rows(body.max_rows, parts.settings),
            isolation_level=body.isolation_level,
            read_only=body.read_only,
            timeout_seconds=body.timeout_seconds,
            row_format=body.row_format,
            discard=node.discard,
            budget=ResultBudget(parts.settings.max_response_bytes,
                                parts.settings.transaction_row_cap),
        )

    async def answer() -> Envelope[TransactionResultPublic]:
        # A read-only transaction may go to a replica; any other to the primary.
        result, node = await parts.pools.run(
            connection_id, work, operation="transaction",
            statements=[s.sql for s in statements], read=body.read_only,
        )
        data = TransactionResultPublic(
            results=[
                StatementResultPublic.model_validate(r, from_attributes=True)
                for r in result.results
            ],
            duration_ms=result.duration_ms,
            node=None if node is None else NodePublic.model_validate(_node(node)),
        )
        return Envelope(data=data, message=f"{len(result.results)} statements committed")

    return await _watched(request, answer())


@router.get(
    "/{connection_id}/tables",
    summary="Tables a source node can read",
    description="PostgreSQL: every non-system schema; MySQL/MariaDB: the database.",
)
async def tables(
    connection_id: ConnectionId, parts: QueryParts
) -> Envelope[list[TablePublic]]:
    async def work(node: QueryNode, conn: AsyncConnection) -> Envelope[list[TablePublic]]:
        found = await list_tables(
            conn, node.config, max_rows=parts.settings.max_rows, discard=node.discard
        )
        data = [TablePublic(schema=t.schema, name=t.name, type=t.type) for t in found]
        return Envelope(data=data, message=f"{len(data)} tables")

    envelope, _ = await parts.pools.run(connection_id, work, operation="tables", read=True)
    return envelope


@router.get(
    "/{connection_id}/tables/{table}/rows",
    summary="Read rows of one table",
    description="The table must exist in the catalogue; it is quoted by the dialect.",
)
async def table_rows(
    connection_id: ConnectionId,
    table: str,
    parts: QueryParts,
    limit: Annotated[int, Query(ge=1, description="Rows to return (default 100)")] = 100,
    offset: Annotated[int, Query(ge=0, le=2**62)] = 0,
    schema: Annotated[str | None, Query(max_length=256)] = None,
) -> Envelope[QueryResultPublic]:
    async def work(node: QueryNode, conn: AsyncConnection) -> QueryResult:
        return await read_rows(
            conn,
            node.config,
            table,
            schema=schema,
            limit=min(limit, parts.settings.max_rows),
            offset=offset,
            discard=node.discard,
            budget=ResultBudget(parts.settings.max_response_bytes),
        )

    result, node = await parts.pools.run(connection_id, work, operation="rows", read=True)
    data = QueryResultPublic.model_validate(result, from_attributes=True)
    data.node = None if node is None else NodePublic.model_validate(_node(node))
    return Envelope(data=data, message=f"{result.row_count} rows")


@router.post(
    "/{connection_id}/test",
    summary="Check the connection works",
    description="One trip through the pool: latency, server version and `canWrite` (whether "
    "the stored login could write: PostgreSQL superuser, CREATE on the database or a "
    "schema, or INSERT/UPDATE/DELETE/TRUNCATE on any table; MySQL/MariaDB a direct grant "
    "of a writing privilege on any level; null when the server would not say), or the "
    "error (DB_AUTH_FAILED, DB_UNAVAILABLE, ...). A `readOnly` connection whose login can "
    "write is kept read-only by dbpool; a login with SELECT rights only is the stronger "
    "guarantee.",
)
async def test_connection(
    connection_id: ConnectionId, parts: QueryParts
) -> Envelope[ConnectionTestPublic]:
    started = time.perf_counter()

    async def work(node: QueryNode, conn: AsyncConnection) -> tuple[str, bool | None]:
        config = node.config
        sql = "SHOW server_version" if config.db_type is DbType.POSTGRESQL else "SELECT VERSION()"
        result = await run_query(
            conn, config, sql, max_rows=1, row_format="array", discard=node.discard
        )
        return str(result.rows[0][0]), await can_write(conn, config, discard=node.discard)

    (version, writable), _ = await parts.pools.run(connection_id, work, operation="test",
                                                   target="primary")
    latency = round((time.perf_counter() - started) * 1000, 3)
    data = ConnectionTestPublic(ok=True, latency_ms=latency, server_version=version,
                                can_write=writable)
    return Envelope(data=data, message=f"connection {connection_id} works")
