"""Fixtures shared by the integration tests: registries on SQLite and PostgreSQL, and a
running app (lifespan and all) behind an in-process HTTP client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.support.api import make_settings, registry_url, running_app
from tests.support.replicas import replica_pairs

__all__ = ["client", "registry_url", "replica_pairs"]


@pytest.fixture
async def client(registry_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The app on ``registry_url`` with both bearer keys set."""
    async with running_app(make_settings(registry_url)) as c:
        yield c
