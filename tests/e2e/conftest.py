"""E2E fixtures: real ``dbpool serve`` processes, each stopped after its test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.server import DbpoolServer

StartServer = Callable[..., DbpoolServer]


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    """Factory: ``start_server(env={...})`` runs a fresh server on its own SQLite registry."""
    servers: list[DbpoolServer] = []

    def start(*, env: dict[str, str] | None = None, startup_timeout: float = 30.0) -> DbpoolServer:
        workdir = tmp_path / f"server-{len(servers)}"
        server = DbpoolServer(workdir, env=env, startup_timeout=startup_timeout)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(start_server: StartServer) -> DbpoolServer:
    """One running server with default settings (auth off)."""
    return start_server()
