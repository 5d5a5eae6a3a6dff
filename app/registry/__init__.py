"""The registry: the ``external_db_connections`` table, its migrations, the secret box,
the repository and the resolver that hands ``ConnectionConfig`` to the pools."""

from app.registry.crypto import SecretBox, generate_key, load_secret_box
from app.registry.db import create_registry_engine, create_sessionmaker
from app.registry.migrations import (
    alembic_config,
    downgrade,
    schema_is_at_head,
    upgrade_to_head,
)
from app.registry.models import Base, ExternalDbConnection
from app.registry.repository import (
    UPDATABLE_FIELDS,
    ConnectionRecord,
    ConnectionRepository,
    NewConnection,
)
from app.registry.resolver import RegistryResolver

__all__ = [
    "UPDATABLE_FIELDS",
    "Base",
    "ConnectionRecord",
    "ConnectionRepository",
    "ExternalDbConnection",
    "NewConnection",
    "RegistryResolver",
    "SecretBox",
    "alembic_config",
    "create_registry_engine",
    "create_sessionmaker",
    "downgrade",
    "generate_key",
    "load_secret_box",
    "schema_is_at_head",
    "upgrade_to_head",
]
