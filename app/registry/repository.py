"""CRUD over ``external_db_connections``.

Passwords go in encrypted and come out only through ``load_config`` (the resolver's
door). Database errors become the service's own errors here, in one place.
"""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from pydantic import SecretStr
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from app.domain import (
    CONNECTION_FIELDS,
    NULLABLE_FIELDS,
    UNVERSIONED_FIELDS,
    VIEW_FIELDS,
    ConnectionConfig,
    ReplicaNode,
)
from app.errors import (
    ConnectionInactive,
    ConnectionNameTaken,
    ConnectionNotFound,
    CredentialsUnreadable,
    ValidationFailed,
)
from app.registry.crypto import SecretBox
from app.registry.faults import translate_registry_faults
from app.registry.models import ExternalDbConnection, utc_now
from app.registry.records import (
    ConnectionRecord,
    NewConnection,
    stored_values,
    to_config,
    to_record,
)
from app.registry.rules import (
    check_row,
    coerce_db_type,
    new_replica_addresses,
    require_password_for_new_server,
)

__all__ = ["UPDATABLE_FIELDS", "ConnectionRecord", "ConnectionRepository", "NewConnection"]

UPDATABLE_FIELDS = frozenset((*CONNECTION_FIELDS, *VIEW_FIELDS))


class ConnectionRepository:
    """The registry table behind CRUD methods that speak in records, not ORM rows."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], box: SecretBox) -> None:
        self._sessions = sessionmaker
        self._box = box

    def __repr__(self) -> str:
        return f"ConnectionRepository(box={self._box!r})"

    @translate_registry_faults
    async def create(self, new: NewConnection) -> ConnectionRecord:
        """Register ``new``; ``ConnectionNameTaken`` when its name is in use."""
        now = utc_now()
        row = ExternalDbConnection(
            **stored_values(new),
            password_encrypted=self._box.encrypt(new.password.get_secret_value()),
            replicas=self._stored_replicas(new.replicas, []),
            created_at=now,
            updated_at=now,
            config_version=1,
        )
        check_row(row)
        with _integrity_errors(new.name):
            async with self._sessions.begin() as session:
                session.add(row)
        return to_record(row)

    @translate_registry_faults
    async def get(self, connection_id: int) -> ConnectionRecord:
        """One connection; ``ConnectionNotFound`` when the id is unknown."""
        async with self._sessions() as session:
            return to_record(await _row(session, connection_id))

    @translate_registry_faults
    async def list(self, limit: int, offset: int) -> tuple[builtins.list[ConnectionRecord], int]:
        """A page of connections ordered by id, and the total count."""
        async with self._sessions() as session:
            total = await session.scalar(select(func.count()).select_from(ExternalDbConnection))
            rows = await session.scalars(
                select(ExternalDbConnection)
                .order_by(ExternalDbConnection.id)
                .limit(limit)
                .offset(offset)
            )
            return [to_record(row) for row in rows], int(total or 0)

    @translate_registry_faults
    async def update(self, connection_id: int, changes: Mapping[str, Any]) -> ConnectionRecord:
        """Apply ``changes`` (model field names; ``password`` as ``SecretStr``).

        Bumps ``config_version`` when a pool-affecting field changes value.
        """
        values, password = _split_changes(changes)
        with _integrity_errors(values.get("name")), _gone_meanwhile(connection_id):
            async with self._sessions.begin() as session:
                row = await _row(session, connection_id, for_update=True)
                require_password_for_new_server(row, values, password_given=password is not None)
                if "replicas" in values:
                    values["replicas"] = self._stored_replicas(
                        values["replicas"], row.replicas or [],
                        password_given=password is not None,
                    )
                changed = {key for key, value in values.items() if getattr(row, key) != value}
                for key, value in values.items():
                    setattr(row, key, value)
                if password is not None:
                    row.password_encrypted = self._box.encrypt(password)
                    changed.add("password")
                check_row(row)
                row.updated_at = utc_now()
                if changed - UNVERSIONED_FIELDS:
                    # An SQL expression, so concurrent updates can never lose a bump.
                    row.config_version = ExternalDbConnection.config_version + 1
                    await session.flush()
                    await session.refresh(row)
                return to_record(row)

    @translate_registry_faults
    async def delete(self, connection_id: int) -> None:
        """Remove a connection; ``ConnectionNotFound`` when the id is unknown."""
        async with self._sessions.begin() as session:
            deleted = await session.scalar(
                delete(ExternalDbConnection)
                .where(ExternalDbConnection.id == connection_id)
                .returning(ExternalDbConnection.id)
            )
            if deleted is None:
                raise _not_found(connection_id)

    @translate_registry_faults
    async def rotate_keys(self) -> int:
        """Re-encrypt every stored password under the first key, all in one transaction.

        A row no configured key can open aborts the whole rotation with
        ``CredentialsUnreadable`` naming it. Returns how many rows were re-encrypted.
        """
        async with self._sessions.begin() as session:
            rows = (
                await session.scalars(
                    select(ExternalDbConnection).order_by(ExternalDbConnection.id).with_for_update()
                )
            ).all()
            for row in rows:
                row.password_encrypted = self._rotate_one(row, row.password_encrypted)
                if any("password_encrypted" in r for r in row.replicas or ()):
                    row.replicas = [
                        {**r, "password_encrypted": self._rotate_one(row, r["password_encrypted"])}
                        if "password_encrypted" in r else r
                        for r in row.replicas
                    ]
            return len(rows)

    @translate_registry_faults
    async def load_config(self, connection_id: int) -> ConnectionConfig:
        """The pool's view of a connection, password decrypted (for the resolver only).

        Raises ``ConnectionNotFound``, ``ConnectionInactive`` or ``CredentialsUnreadable``.
        """
        async with self._sessions() as session:
            row = await _row(session, connection_id)
        if not row.is_active:
            raise ConnectionInactive(
                f"connection {connection_id} is inactive", details={"connectionId": connection_id}
            )
        replicas = tuple(
            ReplicaNode(
                host=r["host"], port=r["port"], weight=r.get("weight", 1),
                username=r.get("username"),
                password=None if "password_encrypted" not in r else SecretStr(
                    self._decrypt_one(row, r["password_encrypted"])
                ),
            )
            for r in row.replicas or ()
        )
        return to_config(row, SecretStr(self._decrypt_one(row)), replicas)

    @translate_registry_faults
    async def config_versions(self) -> dict[int, int]:
        """``{id: config_version}`` of every active connection, in one query."""
        async with self._sessions() as session:
            result = await session.execute(
                select(ExternalDbConnection.id, ExternalDbConnection.config_version).where(
                    ExternalDbConnection.is_active.is_(True)
                )
            )
            return {row_id: version for row_id, version in result}

    def _stored_replicas(
        self,
        replicas: Sequence[ReplicaNode],
        stored: Sequence[Mapping[str, Any]],
        *,
        password_given: bool = True,
    ) -> builtins.list[dict[str, Any]]:
        """The JSON kept for ``replicas``: own passwords encrypted; a replica sent again
        without one keeps the password stored for its address."""
        new = new_replica_addresses(replicas, stored)
        if new and not password_given:
            raise ValidationFailed(
                "a new replica address without its own password requires the password again",
                details={"field": "password"},
            )
        kept = {(r["host"], r["port"]): r.get("password_encrypted") for r in stored}
        out = []
        for replica in replicas:
            entry: dict[str, Any] = {"host": replica.host, "port": replica.port,
                                     "weight": replica.weight}
            if replica.username is not None:
                entry["username"] = replica.username
            if replica.password is not None:
                entry["password_encrypted"] = self._box.encrypt(
                    replica.password.get_secret_value()
                )
            elif kept.get((replica.host, replica.port)) is not None:
                entry["password_encrypted"] = kept[(replica.host, replica.port)]
            out.append(entry)
        return out

    def _decrypt_one(self, row: ExternalDbConnection, token: str | None = None) -> str:
        label = f"the stored password of connection {row.id}"
        try:
            return self._box.decrypt(token or row.password_encrypted, label=label)
        except CredentialsUnreadable as exc:
            exc.details["connectionId"] = row.id
            raise

    def _rotate_one(self, row: ExternalDbConnection, token: str) -> str:
        label = f"the stored password of connection {row.id} (rotation aborted: nothing changed)"
        try:
            return self._box.rotate(token, label=label)
        except CredentialsUnreadable as exc:
            exc.details["connectionId"] = row.id
            raise


async def _row(
    session: AsyncSession, connection_id: int, *, for_update: bool = False
) -> ExternalDbConnection:
    row = await session.get(ExternalDbConnection, connection_id, with_for_update=for_update)
    if row is None:
        raise _not_found(connection_id)
    return row


def _split_changes(changes: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
    """Validate the keys of ``changes``; return the column values and the new password."""
    unknown = sorted(set(changes) - UPDATABLE_FIELDS)
    if unknown:
        raise ValidationFailed(f"unknown field {unknown[0]!r}", details={"field": unknown[0]})
    values = dict(changes)
    for key, value in values.items():
        if value is None and key not in NULLABLE_FIELDS:
            raise ValidationFailed(f"{key} cannot be null", details={"field": key})
    if "db_type" in values:
        values["db_type"] = coerce_db_type(values["db_type"])
    secret = values.pop("password", None)
    if isinstance(secret, SecretStr):
        return values, secret.get_secret_value()
    return values, secret


@contextlib.contextmanager
def _integrity_errors(name: str | None) -> Iterator[None]:
    """The one place a registry IntegrityError becomes a service error."""
    try:
        yield
    except IntegrityError as exc:
        if _is_unique_violation(exc):
            raise ConnectionNameTaken(
                f"a connection named {name!r} already exists", details={"field": "name"}
            ) from exc
        raise ValidationFailed("the values break a registry constraint") from exc


@contextlib.contextmanager
def _gone_meanwhile(connection_id: int) -> Iterator[None]:
    """A row deleted between our read and our write (a DELETE racing a PATCH, where the
    database cannot lock the row first, e.g. SQLite) is simply not found."""
    try:
        yield
    except StaleDataError as exc:
        raise _not_found(connection_id) from exc


def _is_unique_violation(exc: IntegrityError) -> bool:
    orig = exc.orig
    if getattr(orig, "sqlstate", None) == "23505":  # PostgreSQL unique_violation
        return True
    if getattr(orig, "sqlite_errorname", None) == "SQLITE_CONSTRAINT_UNIQUE":
        return True
    return "unique" in str(orig).lower()


def _not_found(connection_id: int) -> ConnectionNotFound:
    return ConnectionNotFound(
        f"connection {connection_id} does not exist", details={"connectionId": connection_id}
    )
