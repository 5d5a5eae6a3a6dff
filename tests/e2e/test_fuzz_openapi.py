"""schemathesis against a real ``dbpool serve``: every operation of ``/openapi.json`` with the
admin token and a bounded number of examples; no 500, and every response conforms to the
status codes and schemas the document declares.

Registrations are confined to the local test databases twice over: the service runs with
``DBPOOL_ALLOWED_HOSTS=127.0.0.1`` and the hooks (``tests/e2e/fuzz/hooks.py``) rewrite every
well-formed host and port to the test servers before a request is sent. The connections
the fuzzer's path ids land on are registered first: a working PostgreSQL and MariaDB one, an
inactive one and one whose password the database refuses.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import StartServer
from tests.e2e.fuzz.hooks import KNOWN_IDS
from tests.support import dbs

pytestmark = [pytest.mark.postgresql, pytest.mark.mariadb, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
FUZZ = Path(__file__).resolve().parent / "fuzz"
ADMIN_KEY = "fuzz-admin-key-0123456789"
MAX_SECONDS = 45  # the whole run's budget: phases stop when it is spent
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
)


def _register(http: httpx.Client) -> None:
    base = {"host": "127.0.0.1", "database": dbs.PG_DATABASE, "username": dbs.PG_USER,
            "maxConnections": 2, "connectionTimeout": 5, "queryTimeout": 5}  # fmt: skip
    bodies = [
        {"name": "fuzz-pg", "dbType": "postgresql", "port": dbs.PG_PORT,
         "password": dbs.PG_PASSWORD},
        {"name": "fuzz-my", "dbType": "mariadb", "port": dbs.MY_PORT,
         "password": dbs.MY_PASSWORD},
        {"name": "fuzz-off", "dbType": "postgresql", "port": dbs.PG_PORT,
         "password": dbs.PG_PASSWORD, "isActive": False},
        {"name": "fuzz-refused", "dbType": "mariadb", "port": dbs.MY_PORT,
         "password": "not-the-password"},
    ]  # fmt: skip
    ids = []
    for body in bodies:
        response = http.post("/api/external-db-connections", json=base | body)
        assert response.status_code == 201, response.text
        ids.append(response.json()["data"]["id"])
    assert ids == list(range(1, KNOWN_IDS + 1))


def test_openapi_fuzz_finds_no_500_and_no_schema_violation(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = start_server(
        env={
            "DBPOOL_ADMIN_API_KEY": ADMIN_KEY,
            "DBPOOL_ALLOWED_HOSTS": "127.0.0.1",
            "DBPOOL_POOL_IDLE_TTL_SECONDS": "5",
            "DBPOOL_HEALTH_CHECK_INTERVAL_SECONDS": "2",
        }
    )
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with server.client(headers=headers) as http:
        _register(http)
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file", str(FUZZ / "schemathesis.toml"),
        "run", f"{server.base_url}/openapi.json",
        "--header", f"Authorization: Bearer {ADMIN_KEY}",
        "--checks", ",".join(CHECKS),
        "--phases", "examples,coverage,fuzzing",
        "--max-examples", "5",
        "--max-time", str(MAX_SECONDS),
        "--workers", "1",
        "--request-timeout", "15",
        "--seed", "20261201",
        "--output-truncate", "true",
        "--report-dir", str(tmp_path / "report"),
    ]  # fmt: skip
    env = os.environ | {"SCHEMATHESIS_HOOKS": "tests.e2e.fuzz.hooks", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=MAX_SECONDS + 60
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    selected = re.search(r"Selected: (\d+)/(\d+)", output)
    tested = re.search(r"Tested: (\d+)", output)
    assert selected and tested, output[-3000:]
    assert selected[1] == selected[2] == tested[1], output[-3000:]  # all operations, all tested
    server_log = server.log()
    assert "Traceback" not in server_log, server_log[-4000:]
