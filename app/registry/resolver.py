"""``domain.ConfigResolver`` backed by the registry: the only place a password is decrypted."""

from __future__ import annotations

from collections.abc import Mapping

from app.domain import ConnectionConfig
from app.registry.repository import ConnectionRepository

__all__ = ["RegistryResolver"]


class RegistryResolver:
    """Turns a connection id into its ``ConnectionConfig`` for the pool manager.

    Raises ``ConnectionNotFound``, ``ConnectionInactive`` or ``CredentialsUnreadable``.
    """

    def __init__(self, repository: ConnectionRepository) -> None:
        self._repository = repository

    def __repr__(self) -> str:
        return f"RegistryResolver({self._repository!r})"

    async def resolve(self, connection_id: int) -> ConnectionConfig:
        """The current configuration of ``connection_id``, password decrypted."""
        return await self._repository.load_config(connection_id)

    async def config_versions(self) -> Mapping[int, int]:
        """``{id: config_version}`` of every active connection."""
        return await self._repository.config_versions()
