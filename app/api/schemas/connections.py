"""Request and response bodies of the registry endpoints.

``password`` is write-only: it exists on ``ConnectionCreate`` / ``ConnectionUpdate`` as a
``SecretStr`` and on no response schema. Cross-field rules that need the stored record
(``minConnections <= maxConnections`` on PATCH, a new host needs the password) live in the route.

Each schema declares its fields itself (the wire contract: constraints, defaults, descriptions,
examples), and each covers exactly the fields of ``app.domain.ConnectionFields`` plus its own
(``tests/unit/test_connection_fields.py``). What goes out is declared, never derived, so a field
added to the domain is not returned until ``ConnectionPublic`` says so.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime
from typing import Annotated, Any

from cryptography import x509
from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    JsonValue,
    SecretStr,
    field_serializer,
    field_validator,
    model_validator,
)

from app.api.schemas.common import ApiModel
from app.domain import (
    CONNECTION_FIELDS,
    MAX_CONNECTIONS_LIMIT,
    MAX_NAME_LENGTH,
    MAX_REPLICAS,
    NULLABLE_FIELDS,
    VIEW_FIELDS,
    DbType,
    ReplicaNode,
    SslMode,
)

__all__ = [
    "DEFAULT_PORTS",
    "ConnectionCreate",
    "ConnectionPublic",
    "ConnectionUpdate",
    "ReplicaCreate",
    "ReplicaPublic",
    "is_valid_host",
]

DEFAULT_PORTS = {DbType.POSTGRESQL: 5432, DbType.MYSQL: 3306, DbType.MARIADB: 3306}
MAX_TIMEOUT_SECONDS = 3600
MAX_CA_CERT_CHARS = 64 * 1024

_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def is_valid_host(host: str) -> bool:
    """An IP address or an RFC 1123 host name; never a socket path, URL or whitespace."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    name = host[:-1] if host.endswith(".") else host
    if not name or len(name) > 253:
        return False
    labels = name.split(".")
    # An all-numeric last label would be read as a (malformed) IPv4 address by resolvers.
    if labels[-1].isdigit():
        return False
    return all(_LABEL.fullmatch(label) for label in labels)


def _check_host(value: str) -> str:
    if not is_valid_host(value):
        raise ValueError("must be a host name (letters, digits, '-', '.') or an IP address")
    return value


def _check_text(value: str) -> str:
    # Control characters (NUL above all) would be cut or misread by drivers and logs.
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    if not value.strip():
        raise ValueError("must not be blank")
    return value


Name = Annotated[
    str, Field(min_length=1, max_length=MAX_NAME_LENGTH), AfterValidator(_check_text)
]
Host = Annotated[str, Field(min_length=1, max_length=253), AfterValidator(_check_host)]
Identifier = Annotated[str, Field(min_length=1, max_length=128), AfterValidator(_check_text)]
Password = Annotated[SecretStr, Field(max_length=1024)]
Port = Annotated[int, Field(ge=1, le=65535, strict=True)]
MaxConnections = Annotated[int, Field(ge=1, le=MAX_CONNECTIONS_LIMIT, strict=True)]
MinConnections = Annotated[int, Field(ge=0, le=MAX_CONNECTIONS_LIMIT, strict=True)]
Timeout = Annotated[float, Field(gt=0, le=MAX_TIMEOUT_SECONDS, strict=True)]
Flag = Annotated[bool, Field(strict=True)]
Description = Annotated[str, Field(max_length=1000)]
Weight = Annotated[int, Field(ge=1, le=100, strict=True)]
MaxLag = Annotated[float, Field(gt=0, le=86400)]
_LAG_HELP = (
    "`auto` reads skip a replica whose measured lag is past this many seconds (or that cannot "
    "be measured); null: no bound"
)
_REPLICAS_HELP = (
    "More servers of the same database. Each node gets its own pool of up to "
    "`maxConnections`; roles (primary / replica) are discovered from the servers."
)


class ReplicaCreate(ApiModel):
    """One more server; credentials default to the registration's own."""

    model_config = ConfigDict(extra="forbid")

    host: Host
    port: Port | None = Field(default=None, description="Default: the engine's usual port")
    weight: Weight = Field(default=1, description="Relative share of the reads (1-100)")
    username: Identifier | None = None
    password: Password | None = None

    def node(self, db_type: DbType) -> ReplicaNode:
        return ReplicaNode(
            host=self.host, port=self.port or DEFAULT_PORTS[db_type], weight=self.weight,
            username=self.username, password=self.password,
        )


class ReplicaPublic(ApiModel):
    """A replica as the API shows it: never a password."""

    model_config = ConfigDict(from_attributes=True)

    host: str
    port: int
    weight: int
    username: str | None = Field(description="null: the registration's own username")
    has_password: bool = Field(description="It has a password of its own")

_CREATE_EXAMPLE: dict[str, JsonValue] = {
    "name": "crm",
    "dbType": "postgresql",
    "host": "db.internal",
    "port": 5432,
    "database": "crm",
    "username": "crm_reader",
    "password": "s3cret",
    "maxConnections": 10,
    "minConnections": 0,
    "connectionTimeout": 30,
    "queryTimeout": 60,
    "readOnly": True,
    "options": {"ssl": "require"},
    "description": "CRM replica for the reporting workflows",
}


def _check_pem(value: str) -> str:
    try:
        certificates = x509.load_pem_x509_certificates(value.encode())
    except ValueError:
        raise ValueError("must be PEM certificates (-----BEGIN CERTIFICATE-----)") from None
    if not certificates:
        raise ValueError("must hold at least one certificate")
    return value


CaCert = Annotated[str, Field(max_length=MAX_CA_CERT_CHARS), AfterValidator(_check_pem)]


class ConnectionOptions(ApiModel):
    """Driver options; unknown keys are refused rather than silently ignored."""

    model_config = ConfigDict(extra="forbid")

    ssl: SslMode | None = Field(
        default=None,
        description="TLS mode: disable | prefer | require | verify-ca | verify-full "
        "(default: prefer on PostgreSQL, disable on MySQL/MariaDB). Use verify-full for "
        "anything not on loopback.",
    )
    ca_cert: CaCert | None = Field(
        default=None,
        description="PEM CA certificate(s) that verify-ca / verify-full trust instead of the "
        "system store (a private CA)",
    )

    def stored(self) -> dict[str, Any]:
        """The form kept in the registry: only what was set, by wire name (``caCert``)."""
        return self.model_dump(exclude_none=True, by_alias=True)


class ConnectionCreate(ApiModel):
    """A new registration. ``port`` defaults to 5432 (PostgreSQL) or 3306 (MySQL/MariaDB)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_CREATE_EXAMPLE]})

    name: Name
    db_type: DbType
    host: Host
    port: Port | None = None
    database: Identifier
    username: Identifier
    password: Password
    is_active: Flag = True
    max_connections: MaxConnections = Field(
        default=10, description="Most connections open at once, per node (with replicas: to "
        "each server)"
    )
    min_connections: MinConnections = 0
    connection_timeout: Timeout = 30.0
    query_timeout: Timeout = 60.0
    read_only: Flag = False
    options: ConnectionOptions = Field(default_factory=ConnectionOptions)
    description: Description | None = None
    replicas: list[ReplicaCreate] = Field(
        default_factory=list, max_length=MAX_REPLICAS, description=_REPLICAS_HELP
    )
    max_replica_lag_seconds: MaxLag | None = Field(default=None, description=_LAG_HELP)

    @field_serializer("options")
    def _stored_options(self, options: ConnectionOptions) -> dict[str, Any]:
        return options.stored()

    def replica_nodes(self) -> tuple[ReplicaNode, ...]:
        return tuple(r.node(self.db_type) for r in self.replicas)

    @model_validator(mode="after")
    def _default_port(self) -> ConnectionCreate:
        if self.port is None:
            self.port = DEFAULT_PORTS[self.db_type]
        return self


class ConnectionUpdate(ApiModel):
    """A partial change: only the fields present are changed. Credentials that would go
    somewhere new (host, port, username, database, dbType, a weaker TLS mode) need
    ``password`` again."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"maxConnections": 20}, {"host": "db2.internal", "password": "s3cret"}]
        },
    )

    name: Name | None = None
    db_type: DbType | None = None
    host: Host | None = None
    port: Port | None = None
    database: Identifier | None = None
    username: Identifier | None = None
    password: Password | None = None
    is_active: Flag | None = None
    max_connections: MaxConnections | None = None
    min_connections: MinConnections | None = None
    connection_timeout: Timeout | None = None
    query_timeout: Timeout | None = None
    read_only: Flag | None = None
    options: ConnectionOptions | None = None
    description: Description | None = None
    replicas: list[ReplicaCreate] | None = Field(
        default=None, max_length=MAX_REPLICAS,
        description="Replaces the list. A replica address not registered before needs its own "
        "`password`, or `password` at the top level.",
    )
    max_replica_lag_seconds: MaxLag | None = Field(default=None, description=_LAG_HELP)

    # Every registration field but the nullable ones: a field of ``ConnectionFields`` missing
    # here fails at import ("Decorators defined with incorrect fields").
    @field_validator(*(f for f in (*CONNECTION_FIELDS, *VIEW_FIELDS) if f not in NULLABLE_FIELDS))
    @classmethod
    def _not_null(cls, value: object) -> object:
        # Defaults are not validated, so this only fires on an explicit JSON null.
        if value is None:
            raise ValueError("must not be null (leave the field out to keep it)")
        return value

    def changes(self, db_type: DbType) -> dict[str, Any]:
        """The fields the caller sent, snake_case (``password`` stays a ``SecretStr``);
        replicas as ``ReplicaNode``s, default ports those of ``db_type``."""
        changes = {name: getattr(self, name) for name in self.model_fields_set}
        if isinstance(changes.get("options"), ConnectionOptions):
            changes["options"] = changes["options"].stored()
        if self.replicas is not None:
            changes["replicas"] = tuple(r.node(self.db_type or db_type) for r in self.replicas)
        return changes


class ConnectionPublic(ApiModel):
    """A registration as the API shows it: every column but the password."""

    model_config = ConfigDict(from_attributes=True)

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
    options: dict[str, Any]
    description: str | None
    created_at: datetime
    updated_at: datetime
    config_version: int
    replicas: list[ReplicaPublic]
    max_replica_lag_seconds: float | None
