"""The registry endpoints: register, list, read, change and remove external connections.

Reads need any valid key; writes need the admin key. After a change or removal the pool
manager is told, so new requests get a rebuilt pool (or none) while in-flight ones finish.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Query, status
from pydantic.alias_generators import to_camel

from app.api.deps import AdminParts, ConnectionId, QueryParts
from app.api.errors import validation_failed
from app.api.hosts import ensure_host_allowed
from app.api.schemas.common import Envelope, ErrorEnvelope, Page
from app.api.schemas.connections import ConnectionCreate, ConnectionPublic, ConnectionUpdate
from app.domain import SSL_MODES, ca_cert, ssl_mode
from app.registry.repository import ConnectionRecord, NewConnection
from app.settings import HostRule

__all__ = ["router"]

PREFIX = "/api/external-db-connections"

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorEnvelope, "description": text}
    for code, text in {
        401: "Missing or unknown bearer token (UNAUTHORIZED)",
        403: "Admin key needed (FORBIDDEN) or host outside DBPOOL_ALLOWED_HOSTS (HOST_NOT_ALLOWED)",
        404: "No such connection (CONNECTION_NOT_FOUND)",
        409: "Another connection has this name (CONNECTION_NAME_TAKEN)",
        413: "Request body over the size limit (PAYLOAD_TOO_LARGE)",
        422: "A field or the id failed validation (VALIDATION_ERROR); details name each field",
        503: "The registry database cannot be reached (REGISTRY_UNAVAILABLE); Retry-After",
    }.items()
}

router = APIRouter(prefix=PREFIX, tags=["connections"], responses=_ERRORS)


def _public(record: ConnectionRecord) -> ConnectionPublic:
    return ConnectionPublic.model_validate(record, from_attributes=True)


def _wire_names(fields: Iterable[str]) -> set[str]:
    return {to_camel(field) for field in fields}


def _check_bounds(min_connections: int, max_connections: int, sent: set[str]) -> None:
    """``minConnections <= maxConnections``, blaming the field(s) the caller sent."""
    if min_connections <= max_connections:
        return
    fields = [f for f in ("minConnections", "maxConnections") if f in sent] or ["minConnections"]
    raise validation_failed(
        [
            {
                "loc": ["body", field],
                "msg": "minConnections must not exceed maxConnections",
                "type": "value_error",
            }
            for field in fields
        ]
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Register an external database",
    description=(
        "Stores the connection with its password encrypted. The password is never returned. "
        "`port` defaults to 5432 (PostgreSQL) or 3306 (MySQL/MariaDB). Needs the admin key."
    ),
)
async def create_connection(
    body: ConnectionCreate, parts: AdminParts
) -> Envelope[ConnectionPublic]:
    _check_bounds(body.min_connections, body.max_connections, _wire_names(body.model_fields_set))
    rules = parts.settings.allowed_host_rules()
    for host in dict.fromkeys([body.host, *(r.host for r in body.replicas)]):
        await ensure_host_allowed(host, rules)
    new = NewConnection(**body.model_dump(exclude={"replicas"}), replicas=body.replica_nodes())
    record = await parts.repository.create(new)
    return Envelope(data=_public(record), message=f"connection {record.id} registered")


@router.get(
    "",
    summary="List registered connections",
    description="One page, ordered by id. `total` counts all registrations. No passwords.",
)
async def list_connections(
    parts: QueryParts,
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size")] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31, description="Items to skip")] = 0,
) -> Envelope[Page[ConnectionPublic]]:
    records, total = await parts.repository.list(limit, offset)
    page: Page[ConnectionPublic] = Page(items=[_public(r) for r in records], total=total)
    return Envelope(data=page, message=f"{len(records)} of {total} connections")


@router.get(
    "/{connection_id}",
    summary="Read one registered connection",
    description="Every column but the password.",
)
async def get_connection(
    connection_id: ConnectionId, parts: QueryParts
) -> Envelope[ConnectionPublic]:
    record = await parts.repository.get(connection_id)
    return Envelope(data=_public(record), message=f"connection {connection_id}")


@router.patch(
    "/{connection_id}",
    summary="Change a registered connection",
    description=(
        "Only the fields sent change. Pool settings bump `configVersion`; new requests get a "
        "rebuilt pool while in-flight ones finish on the old one. Changing `host`, `port`, "
        "`username`, `database` or `dbType`, weakening `options.ssl` or changing the CA of a "
        "verifying mode requires `password` too, so a stored password never goes somewhere "
        "new; so does a new replica address without a password of its own. `replicas` "
        "replaces the list (a replica sent again without a password keeps its stored one). "
        "Needs the admin key."
    ),
)
async def update_connection(
    connection_id: ConnectionId,
    body: ConnectionUpdate,
    parts: AdminParts,
) -> Envelope[ConnectionPublic]:
    current = await parts.repository.get(connection_id)
    changes = body.changes(current.db_type)
    await _check_update(current, changes, parts.settings.allowed_host_rules())
    record = await parts.repository.update(connection_id, changes) if changes else current
    if changes:
        await parts.pools.invalidate(connection_id)
    return Envelope(data=_public(record), message=f"connection {connection_id} updated")


async def _check_update(
    current: ConnectionRecord, changes: dict[str, Any], rules: Sequence[HostRule]
) -> None:
    _check_bounds(
        changes.get("min_connections", current.min_connections),
        changes.get("max_connections", current.max_connections),
        _wire_names(changes),
    )
    known = {current.host, *(r.host for r in current.replicas)}
    for replica in changes.get("replicas", ()):
        if replica.host not in known:
            await ensure_host_allowed(replica.host, rules)
    moved = _credentials_moved(current, changes)
    if moved and "password" not in changes:
        raise validation_failed(
            [{"loc": ["body", "password"], "msg": f"required when {moved} changes",
              "type": "missing"}]
        )
    new_host = changes.get("host")
    if new_host is not None and new_host != current.host:
        await ensure_host_allowed(new_host, rules)


_WHERE_CREDENTIALS_GO = ("host", "port", "username", "database", "db_type")


def _credentials_moved(current: ConnectionRecord, changes: dict[str, Any]) -> str | None:
    """The wire name of the first change that would send the stored password somewhere new:
    another server, login or database, or a TLS set-up that checks less."""
    for field in _WHERE_CREDENTIALS_GO:
        if field in changes and changes[field] != getattr(current, field):
            return to_camel(field)
    if "options" not in changes:
        return None
    db_type = changes.get("db_type", current.db_type)
    old_mode = ssl_mode(current.options, current.db_type)
    new_mode = ssl_mode(changes["options"], db_type)
    if SSL_MODES.index(new_mode) < SSL_MODES.index(old_mode):
        return "options.ssl"
    verifying = new_mode in ("verify-ca", "verify-full")
    if verifying and ca_cert(changes["options"]) != ca_cert(current.options):
        return "options.caCert"
    return None


@router.delete(
    "/{connection_id}",
    summary="Remove a registered connection",
    description="Deletes the registration and closes its pool. Needs the admin key.",
)
async def delete_connection(
    connection_id: ConnectionId, parts: AdminParts
) -> Envelope[None]:
    await parts.repository.delete(connection_id)
    await parts.pools.invalidate(connection_id)
    return Envelope(data=None, message=f"connection {connection_id} deleted")
