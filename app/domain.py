"""Leaf value types shared by the registry, the pools and the API."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, Protocol

from pydantic import SecretStr

__all__ = [
    "CONNECTION_FIELDS",
    "MAX_CONNECTIONS_LIMIT",
    "MAX_NAME_LENGTH",
    "MAX_REPLICAS",
    "NULLABLE_FIELDS",
    "PRIMARY_NODE",
    "ROW_FIELDS",
    "SSL_MODES",
    "UNVERSIONED_FIELDS",
    "VIEW_FIELDS",
    "ConfigResolver",
    "ConnectionConfig",
    "ConnectionFields",
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


MAX_NAME_LENGTH = 100
MAX_CONNECTIONS_LIMIT = 1000
MAX_REPLICAS = 16


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionFields:
    """The one list of a registration's fields: name, type and default of each.

    ``ConnectionConfig`` (the pools' view) and the registry's ``NewConnection`` and
    ``ConnectionRecord`` inherit it, and the conversions between them and the table row loop
    over ``CONNECTION_FIELDS``. The ORM column, the migration and the API schemas are declared
    where they live (each says more than a name and a type: SQL defaults, constraints,
    descriptions) and ``tests/unit/test_connection_fields.py`` fails until they all follow.
    """

    name: str
    db_type: DbType
    host: str
    port: int
    database: str
    username: str
    is_active: bool = True
    max_connections: int = 10
    min_connections: int = 0
    connection_timeout: float = 30.0
    query_timeout: float = 60.0
    read_only: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)
    description: str | None = None
    max_replica_lag_seconds: float | None = None


CONNECTION_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(ConnectionFields))
"""Every field above, in order."""

NULLABLE_FIELDS = frozenset(f.name for f in fields(ConnectionFields) if f.default is None)
"""Fields a PATCH may set to null (those whose default is ``None``)."""

UNVERSIONED_FIELDS = frozenset({"name", "description"})
"""Changing only these leaves a live pool valid, so ``config_version`` stays put."""

VIEW_FIELDS = ("password", "replicas")
"""Registration fields whose form differs per view, so each view declares its own:
``password`` (``SecretStr`` in, Fernet ciphertext at rest, never out) and ``replicas``
(``ReplicaNode`` in, JSON at rest, ``ReplicaRecord`` out)."""

ROW_FIELDS = ("id", "created_at", "updated_at", "config_version")
"""Kept by the registry itself, never sent by a caller."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionConfig(ConnectionFields):
    """Everything needed to build one pool; immutable, the password hidden from ``repr``."""

    id: int
    password: SecretStr = field(repr=False)
    config_version: int = 1
    # A small cluster: more servers of the same database. Roles (primary / replica) are
    # discovered from the servers, never taken from this list.
    replicas: tuple[ReplicaNode, ...] = ()
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
