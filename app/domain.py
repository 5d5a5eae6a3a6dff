"""Leaf value types shared by the registry, the pools and the API."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

from pydantic import SecretStr

__all__ = [
    "PRIMARY_NODE",
    "SSL_MODES",
    "ConfigResolver",
    "ConnectionConfig",
    "DbType",
    "ReplicaNode",
    "SslMode",
    "ca_cert",
    "ssl_mode",
]


class DbType(enum.StrEnum):
    """The database engines a registered connection can point at."""

    POSTGRESQL = "postgresql"
    MYSQL = "mysql"
    MARIADB = "mariadb"

    @property
    def is_mysql_family(self) -> bool:
        return self is not DbType.POSTGRESQL


SslMode = Literal["disable", "prefer", "require", "verify-ca", "verify-full"]
"""TLS to the database, libpq's words: ``prefer`` tries TLS and falls back (PostgreSQL only;
MySQL/MariaDB treat it as ``disable``), ``require`` encrypts without checking the certificate,
``verify-ca`` checks it against the system CAs, ``verify-full`` checks the host name too."""

SSL_MODES: tuple[SslMode, ...] = ("disable", "prefer", "require", "verify-ca", "verify-full")
"""Weakest first: a change to an earlier mode is a weakening."""


def ssl_mode(options: Mapping[str, Any], db_type: DbType) -> SslMode:
    """The registered TLS mode (``options.ssl``; ``sslmode`` from older registrations), or the
    engine's default: ``prefer`` on PostgreSQL, ``disable`` on MySQL/MariaDB."""
    mode = options.get("ssl") or options.get("sslmode")
    if mode in SSL_MODES:
        return mode  # type: ignore[no-any-return]
    return "disable" if db_type.is_mysql_family else "prefer"


def ca_cert(options: Mapping[str, Any]) -> str | None:
    """The registration's own PEM CA certificate(s), if any (``options.caCert``)."""
    value = options.get("caCert")
    return value if isinstance(value, str) and value else None


PRIMARY_NODE = "node0"
"""The id of a registration's own host/port node; its replicas are ``node1``, ``node2`` ..."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicaNode:
    """One more server of a registration; ``None`` credentials mean "the registration's own"."""

    host: str
    port: int
    weight: int = 1
    username: str | None = None
    password: SecretStr | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionConfig:
    """Everything needed to build one pool; immutable, the password hidden from ``repr``."""

    id: int
    name: str
    db_type: DbType
    host: str
    port: int
    database: str
    username: str
    password: SecretStr = field(repr=False)
    max_connections: int = 10
    min_connections: int = 0
    connection_timeout: float = 30.0
    query_timeout: float = 60.0
    read_only: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)
    config_version: int = 1
    # A small cluster: more servers of the same database. Roles (primary / replica) are
    # discovered from the servers, never taken from this list.
    replicas: tuple[ReplicaNode, ...] = ()
    max_replica_lag_seconds: float | None = None
    # Which node of the registration this config addresses (see ``nodes()``).
    node: str = PRIMARY_NODE
    weight: int = 1

    @property
    def pool_name(self) -> str:
        """The name the pool carries in metrics and as PostgreSQL ``application_name``."""
        return f"dbpool:{self.id}"

    @property
    def address(self) -> str:
        """``host:port``, the node's label in status and logs (never credentials)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def nodes(self) -> tuple[ConnectionConfig, ...]:
        """One single-node config per server: this registration's own host first (``node0``),
        then each replica (``node1`` ...) with its own address, weight and credentials."""
        own = replace(self, replicas=(), node=PRIMARY_NODE)
        return (own, *(
            replace(
                own,
                host=replica.host,
                port=replica.port,
                weight=replica.weight,
                username=self.username if replica.username is None else replica.username,
                password=self.password if replica.password is None else replica.password,
                node=f"node{index}",
            )
            for index, replica in enumerate(self.replicas, start=1)
        ))


class ConfigResolver(Protocol):
    """Turns a connection id into its ``ConnectionConfig`` (implemented by the registry).

    Raises ``ConnectionNotFound``, ``ConnectionInactive`` or ``CredentialsUnreadable``.
    """

    async def resolve(self, connection_id: int) -> ConnectionConfig: ...

    async def config_versions(self) -> Mapping[int, int]:
        """``{id: config_version}`` of every active connection (one cheap registry query)."""
        ...
