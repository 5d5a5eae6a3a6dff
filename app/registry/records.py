"""The registry's value types: what goes in (``NewConnection``) and what comes out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import SecretStr

from app.domain import ConnectionConfig, DbType, ReplicaNode
from app.registry.models import ExternalDbConnection

__all__ = ["ConnectionRecord", "NewConnection", "ReplicaRecord", "to_config", "to_record"]


@dataclass(frozen=True, slots=True, kw_only=True)
class NewConnection:
    """What it takes to register a connection; the password hidden from ``repr``."""

    name: str
    db_type: DbType
    host: str
    port: int
    database: str
    username: str
    password: SecretStr = field(repr=False)
    is_active: bool = True
    max_connections: int = 10
    min_connections: int = 0
    connection_timeout: float = 30.0
    query_timeout: float = 60.0
    read_only: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)
    description: str | None = None
    replicas: tuple[ReplicaNode, ...] = ()
    max_replica_lag_seconds: float | None = None


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
class ConnectionRecord:
    """One registered connection as the API shows it: every column except the password."""

    id: int
    name: str
    db_type: DbType
    host: str
    port: int
    database: str
    username: str
    is_active: bool
    max_connections: int
    min_connections: int
    connection_timeout: float
    query_timeout: float
    read_only: bool
    options: Mapping[str, Any]
    description: str | None
    created_at: datetime
    updated_at: datetime
    config_version: int
    has_password: bool
    replicas: tuple[ReplicaRecord, ...] = ()
    max_replica_lag_seconds: float | None = None


def to_record(row: ExternalDbConnection) -> ConnectionRecord:
    """The public view of ``row`` (no password)."""
    return ConnectionRecord(
        id=row.id,
        name=row.name,
        db_type=DbType(row.db_type),
        host=row.host,
        port=row.port,
        database=row.database,
        username=row.username,
        is_active=row.is_active,
        max_connections=row.max_connections,
        min_connections=row.min_connections,
        connection_timeout=row.connection_timeout,
        query_timeout=row.query_timeout,
        read_only=row.read_only,
        options=dict(row.options or {}),
        description=row.description,
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
        max_replica_lag_seconds=row.max_replica_lag_seconds,
    )


def to_config(
    row: ExternalDbConnection, password: SecretStr, replicas: tuple[ReplicaNode, ...] = ()
) -> ConnectionConfig:
    """The pools' view of ``row`` with its already-decrypted ``password`` and ``replicas``."""
    return ConnectionConfig(
        id=row.id,
        name=row.name,
        db_type=DbType(row.db_type),
        host=row.host,
        port=row.port,
        database=row.database,
        username=row.username,
        password=password,
        max_connections=row.max_connections,
        min_connections=row.min_connections,
        connection_timeout=row.connection_timeout,
        query_timeout=row.query_timeout,
        read_only=row.read_only,
        options=dict(row.options or {}),
        config_version=row.config_version,
        replicas=replicas,
        max_replica_lag_seconds=row.max_replica_lag_seconds,
    )
