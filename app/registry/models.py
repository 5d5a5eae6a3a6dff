"""The ``external_db_connections`` table as a SQLAlchemy 2.x declarative model.

The Alembic migrations (``0001_external_db_connections`` and later) create the same table;
``tests/integration/test_migrations.py`` proves the two agree. The registration's columns
follow ``app.domain.ConnectionFields`` (names, defaults, nullability:
``tests/unit/test_connection_fields.py``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    false,
    func,
    text,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = ["Base", "ExternalDbConnection", "UtcDateTime", "utc_now"]

# Stable constraint names, so a migration (and SQLite batch mode) can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC and always read back timezone-aware.

    SQLite keeps no zone, so values are normalised to UTC on the way in and get
    ``tzinfo=UTC`` on the way out; PostgreSQL stores ``timestamptz`` anyway.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("UtcDateTime needs a timezone-aware datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base of the registry's tables."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class ExternalDbConnection(Base):
    """One registered external database; the password is held only as Fernet ciphertext."""

    __tablename__ = "external_db_connections"
    __table_args__ = (
        CheckConstraint("db_type IN ('postgresql', 'mysql', 'mariadb')", name="db_type"),
        CheckConstraint("port BETWEEN 1 AND 65535", name="port"),
        CheckConstraint("max_connections BETWEEN 1 AND 1000", name="max_connections"),
        CheckConstraint(
            "min_connections >= 0 AND min_connections <= max_connections", name="min_connections"
        ),
        CheckConstraint("connection_timeout > 0", name="connection_timeout"),
        CheckConstraint("query_timeout > 0", name="query_timeout"),
        CheckConstraint(
            "max_replica_lag_seconds IS NULL OR max_replica_lag_seconds > 0",
            name="max_replica_lag_seconds",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    db_type: Mapped[str] = mapped_column(String(20))
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    database: Mapped[str] = mapped_column(String(255))
    username: Mapped[str] = mapped_column(String(255))
    password_encrypted: Mapped[str] = mapped_column(Text)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    max_connections: Mapped[int] = mapped_column(Integer, default=10, server_default=text("10"))
    min_connections: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    connection_timeout: Mapped[float] = mapped_column(
        Float, default=30.0, server_default=text("30")
    )
    query_timeout: Mapped[float] = mapped_column(Float, default=60.0, server_default=text("60"))
    read_only: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, server_default=text("'{}'"))
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(
        UtcDateTime, default=utc_now, server_default=func.now()
    )
    updated_at: Mapped[datetime] = mapped_column(
        UtcDateTime, default=utc_now, server_default=func.now()
    )
    config_version: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    # More servers of the same database: [{host, port, weight, username?, password_encrypted?}]
    # (a replica's own password is Fernet ciphertext, like the registration's).
    replicas: Mapped[list[dict[str, Any]]] = mapped_column(
        JSON, default=list, server_default=text("'[]'")
    )
    max_replica_lag_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)

    def __repr__(self) -> str:
        # Only the listed fields, read from the instance dict so an expired row never
        # triggers I/O: password_encrypted must never appear.
        shown = ", ".join(f"{name}={self.__dict__.get(name)!r}" for name in _REPR_FIELDS)
        return f"ExternalDbConnection({shown})"


_REPR_FIELDS = (
    "id",
    "name",
    "db_type",
    "host",
    "port",
    "database",
    "username",
    "is_active",
    "config_version",
)
