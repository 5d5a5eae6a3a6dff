"""The ``dbpool`` command, run as a real subprocess with environment variables."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr

from app.domain import DbType
from app.errors import CredentialsUnreadable
from app.registry.crypto import SecretBox
from app.registry.db import create_registry_engine, create_sessionmaker
from app.registry.repository import ConnectionRepository, NewConnection
from tests.support.server import dbpool_command, free_port

PASSWORD = "cli-Secret-pw-91e2"


def run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("DBPOOL_")}
    full_env.update(
        DBPOOL_REGISTRY_URL=f"sqlite+aiosqlite:///{tmp_path / 'registry.sqlite3'}",
        DBPOOL_KEY_FILE=str(tmp_path / ".dbpool.key"),
    )
    full_env.update(env)
    return subprocess.run(
        [*dbpool_command(), *args],
        cwd=tmp_path,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_keys_generate_prints_only_a_valid_key(tmp_path: Path) -> None:
    result = run(tmp_path, "keys", "generate")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    Fernet(lines[0].encode())  # raises if the key is malformed
    assert run(tmp_path, "keys", "generate").stdout != result.stdout


@pytest.mark.parametrize("command", [("keys", "rotate"), ("serve", "--port", "1")])
def test_malformed_key_exits_2_without_echoing_it(tmp_path: Path, command: tuple[str, ...]) -> None:
    bad_key = "not-a-fernet-key-SeCrEt"
    good_key = Fernet.generate_key().decode()
    result = run(tmp_path, *command, DBPOOL_ENCRYPTION_KEYS=f"{good_key},{bad_key}")
    assert result.returncode == 2, result.stderr
    assert "encryption key #2 is not a valid Fernet key" in result.stderr
    assert bad_key not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("DBPOOL_PORT", "70000", "DBPOOL_PORT"),
        ("DBPOOL_LOG_LEVEL", "x", "DBPOOL_LOG_LEVEL"),
        ("DBPOOL_ADMIN_API_KEY", "short-SeCrEt", "API keys must be at least 16 characters"),
    ],
)
def test_bad_settings_exit_2_with_a_summary(
    tmp_path: Path, variable: str, value: str, named: str
) -> None:
    result = run(tmp_path, "serve", **{variable: value})
    assert result.returncode == 2
    assert result.stderr.startswith("dbpool: invalid settings:")
    assert named in result.stderr
    assert "Traceback" not in result.stderr
    if "SeCrEt" in value:
        assert value not in result.stderr


def test_migrate_failure_is_one_line_exit_1(tmp_path: Path) -> None:
    result = run(tmp_path, "migrate", DBPOOL_REGISTRY_URL="postgresql+asyncpg://x@127.0.0.1:9/x")
    assert result.returncode == 1
    assert "migration failed" in result.stderr and "Traceback" not in result.stderr


def test_usage_error_exits_2(tmp_path: Path) -> None:
    assert run(tmp_path, "keys").returncode == 2
    assert run(tmp_path, "frobnicate").returncode == 2


async def _register(url: str, key: str) -> int:
    engine = create_registry_engine(url)
    try:
        repository = ConnectionRepository(create_sessionmaker(engine), SecretBox([key]))
        record = await repository.create(
            NewConnection(
                name="rotate-me",
                db_type=DbType.POSTGRESQL,
                host="127.0.0.1",
                port=5432,
                database="x",
                username="u",
                password=SecretStr(PASSWORD),
            )
        )
        return record.id
    finally:
        await engine.dispose()


async def _password(url: str, keys: list[str], connection_id: int) -> str:
    engine = create_registry_engine(url)
    try:
        repository = ConnectionRepository(create_sessionmaker(engine), SecretBox(keys))
        config = await repository.load_config(connection_id)
        return config.password.get_secret_value()
    finally:
        await engine.dispose()


def test_keys_rotate_end_to_end(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'registry.sqlite3'}"
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    migrated = run(tmp_path, "migrate", DBPOOL_ENCRYPTION_KEYS=old)
    assert migrated.returncode == 0, migrated.stderr
    connection_id = asyncio.run(_register(url, old))

    rotated = run(tmp_path, "keys", "rotate", DBPOOL_ENCRYPTION_KEYS=f"{new},{old}")
    assert rotated.returncode == 0, rotated.stderr
    assert rotated.stdout.strip() == "1"
    assert PASSWORD not in rotated.stdout + rotated.stderr

    assert asyncio.run(_password(url, [new], connection_id)) == PASSWORD
    with pytest.raises(CredentialsUnreadable):
        asyncio.run(_password(url, [old], connection_id))


def test_serve_migrates_then_serves_on_the_given_port(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBPOOL_")}
    env.update(
        DBPOOL_REGISTRY_URL=f"sqlite+aiosqlite:///{tmp_path / 'registry.sqlite3'}",
        DBPOOL_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        DBPOOL_PORT="1",  # --port must win over the variable
        DBPOOL_LOG_FORMAT="json",
    )
    log = (tmp_path / "serve.log").open("w+")
    process = subprocess.Popen(
        [*dbpool_command(), "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        ready = _wait_ready(f"http://127.0.0.1:{port}", process)
        assert ready is not None, (tmp_path / "serve.log").read_text()
        assert ready.json() == {"status": "ready"}  # `serve` ran the migration first
    finally:
        process.send_signal(signal.SIGTERM)
        # A clean stop on SIGTERM exits 0 (uvicorn's re-raised signal is answered by ours).
        code = process.wait(15)
        assert code == 0, (code, (tmp_path / "serve.log").read_text()[-3000:])
        log.close()
    text = (tmp_path / "serve.log").read_text()
    assert '"message": "dbpool 0.1.0 started"' in text  # our JSON format, not uvicorn's
    assert "auth is OFF" in text
    assert '"message": "dbpool stopped"' in text  # the lifespan tore everything down


def _wait_ready(base_url: str, process: subprocess.Popen[bytes]) -> httpx.Response | None:
    deadline = time.monotonic() + 30
    with httpx.Client(timeout=2.0) as http:
        while time.monotonic() < deadline and process.poll() is None:
            try:
                response = http.get(f"{base_url}/readyz")
                if response.status_code == 200:
                    return response
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    return None


def test_serve_with_require_auth_and_no_key_exits_2_saying_what_to_set(tmp_path: Path) -> None:
    result = run(tmp_path, "serve", "--port", "1", DBPOOL_REQUIRE_AUTH="true")
    assert result.returncode == 2, result.stderr
    assert "DBPOOL_REQUIRE_AUTH" in result.stderr and "DBPOOL_ADMIN_API_KEY" in result.stderr
