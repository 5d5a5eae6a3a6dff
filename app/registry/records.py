"""The registry's value types: what goes in (``NewConnection``) and what comes out.

Both inherit the registration's fields from ``app.domain.ConnectionFields``; the conversions
below copy those by looping over ``CONNECTION_FIELDS``, so a new field needs no edit here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import SecretStr

from app.domain import CONNECTION_FIELDS, ConnectionConfig, ConnectionFields, DbType, ReplicaNode
from app.registry.models import ExternalDbConnection
from app.registry.rules import coerce_db_type

__all__ = [
    "ConnectionRecord",
    "NewConnection",
    "ReplicaRecord",
    "stored_values",
    "to_config",
    "to_record",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class NewConnection(ConnectionFields):
    """What it takes to register a connection; the password hidden from ``repr``."""

    password: SecretStr = field(repr=False)
    replicas: tuple[ReplicaNode, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicaRecord:
    """One replica as the API shows it: ``username`` is ``None`` when it uses the
    registration's own; never a password."""

    host: str
    port: int
    weight: int
    username: str | None
    has_password: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionRecord(ConnectionFields):
    """One registered connection as the API shows it: every column except the password."""

    id: int
    created_at: datetime
    updated_at: datetime
    config_version: int
    has_password: bool
    replicas: tuple[ReplicaRecord, ...] = ()


def stored_values(new: ConnectionFields) -> dict[str, Any]:
    """The column values of ``new``'s registration fields (``db_type`` as its string)."""
    values = {name: getattr(new, name) for name in CONNECTION_FIELDS}
    values["db_type"] = coerce_db_type(new.db_type)
    values["options"] = dict(new.options)
    return values


def _field_values(row: ExternalDbConnection) -> dict[str, Any]:
    """The registration fields of ``row`` as the domain types them."""
    values = {name: getattr(row, name) for name in CONNECTION_FIELDS}
    values["db_type"] = DbType(row.db_type)
    values["options"] = dict(row.options or {})
    return values


def to_record(row: ExternalDbConnection) -> ConnectionRecord:
    """The public view of ``row`` (no password)."""
    return ConnectionRecord(
        **_field_values(row),
        id=row.id,
        created_at=row.created_at,
        updated_at=row.updated_at,
        config_version=row.config_version,
        has_password=bool(row.password_encrypted),
        replicas=tuple(
            ReplicaRecord(
                host=r["host"], port=r["port"], weight=r.get("weight", 1),
                username=r.get("username"), has_password="password_encrypted" in r,
            )
            for r in row.replicas or ()
        ),
    )


def to_config(
    row: ExternalDbConnection, password: SecretStr, replicas: tuple[ReplicaNode, ...] = ()
) -> ConnectionConfig:
    """The pools' view of ``row`` with its already-decrypted ``password`` and ``replicas``."""
    return ConnectionConfig(
        **_field_values(row),
        id=row.id,
        password=password,
        config_version=row.config_version,
        replicas=replicas,
    )
