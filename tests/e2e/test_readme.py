"""The README's examples run verbatim, in the README's order, against a live ``dbpool serve``
on a fresh registry; its tables are complete.

Example blocks are the ```bash fences right after an ``<!-- readme-example: NAME -->`` line.
Two substitutions: the base URL (the server under test listens on a free port) and the demo
role and database's name, so that the setup block creates them from nothing, as on a fresh
machine, without touching a ``dbpool_demo`` someone made by following the README.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app import errors
from app.settings import Settings
from tests.e2e.conftest import StartServer
from tests.support import dbs

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
DOCUMENTED_URL = "http://127.0.0.1:8000"
EXAMPLE = re.compile(r"<!-- readme-example: ([\w-]+) -->\n```bash\n(.*?)\n```", re.DOTALL)
EXPECTED = [
    "setup", "register", "list", "test", "query", "transaction", "pool-status", "metrics",
    "history",
]
DEMO = "dbpool_demo"  # the role and the database the setup block creates
DEMO_PASSWORD = "dbpool-demo-pw"


def readme_examples() -> dict[str, str]:
    return {name: body for name, body in EXAMPLE.findall(README)}


def run_block(body: str, base_url: str, demo: str = DEMO) -> str:
    """Run one example against ``base_url``, with ``demo`` for the demo role and database."""
    script = body.replace(DOCUMENTED_URL, base_url).replace(DEMO, demo)
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    report = f"{script}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    assert done.returncode == 0, f"example failed with {done.returncode}:\n{report}"
    return done.stdout


def envelope(output: str) -> Any:
    body = json.loads(output)
    assert body["success"] is True, body
    return body["data"]


def test_readme_has_every_example_once() -> None:
    assert [name for name, _ in EXAMPLE.findall(README)] == EXPECTED


def test_quick_start_has_exactly_the_two_commands() -> None:
    quick = README.split("## Quick start", 1)[1].split("### Try it", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)\n```", quick, re.DOTALL)
    assert blocks == [
        "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/dbpool serve",
        "bash scripts/test.sh",
    ]


def test_configuration_table_lists_every_setting() -> None:
    section = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(DBPOOL_[A-Z_]+)`", section, re.MULTILINE))
    fields = {f"DBPOOL_{name.upper()}" for name in Settings.model_fields}
    assert documented == fields


def test_error_table_lists_every_code() -> None:
    section = README.split("## Error codes", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([A-Z_]+)`", section, re.MULTILINE))
    codes = {
        cls.code
        for name in errors.__all__
        if isinstance(cls := getattr(errors, name), type) and name != "DatabaseError"
    }
    assert documented == codes


@pytest.fixture
def demo_name() -> Iterator[str]:
    """A demo role and database name of this test's own; both are dropped afterwards."""
    name = f"{DEMO}_{secrets.token_hex(4)}"
    yield name
    asyncio.run(_drop_role_and_database(name))


async def _drop_role_and_database(name: str) -> None:
    admin = await dbs.pg_admin()
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.execute(f"DROP ROLE IF EXISTS {name}")
    finally:
        await admin.close()


@pytest.mark.postgresql
def test_readme_examples_run_verbatim(start_server: StartServer, demo_name: str) -> None:
    server = start_server(env={"DBPOOL_LOG_LEVEL": "DEBUG"})
    examples = readme_examples()
    assert DEMO in examples["setup"] and DEMO in examples["register"]
    for name in set(EXPECTED) - {"setup"}:
        assert DOCUMENTED_URL in examples[name], f"{name} does not use the documented base URL"
    out = {name: run_block(examples[name], server.base_url, demo_name) for name in EXPECTED}
    run_block(examples["setup"], server.base_url, demo_name)  # "Running it again changes nothing"

    registered = envelope(out["register"])
    assert registered["id"] == 1, "the README's later examples use id 1"
    assert registered["name"] == "crm"
    listed = envelope(out["list"])
    assert listed["total"] == 1 and listed["items"][0]["id"] == 1
    assert envelope(out["test"])["ok"] is True
    query = envelope(out["query"])
    assert query["rows"] == [{"greeting": "hello", "answer": 42}]
    transaction = envelope(out["transaction"])
    assert [r["rows"] for r in transaction["results"]] == [[{"one": 1}], [{"doubled": 42}]]
    status = envelope(out["pool-status"])
    assert [p["connectionId"] for p in status["pools"]] == [1]
    assert status["pools"][0]["openConnections"] >= 1
    assert re.search(r'^db_client_connection_max\{[^}]*connection_id="1"', out["metrics"], re.M)
    # The pool shows in the history from its first sample (one every 5 s here).
    for _ in range(60):
        pools = envelope(out["history"])["pools"]
        if pools:
            break
        time.sleep(0.25)
        out["history"] = run_block(examples["history"], server.base_url)
    assert [(p["connectionId"], p["connectionName"]) for p in pools] == [(1, "crm")]

    for name in ("register", "list", "query", "pool-status"):
        assert DEMO_PASSWORD not in out[name], f"{name} response shows the password"
    server.stop()
    assert server.stopped_cleanly()
    log = server.log()
    assert "auth is OFF" in log, "the server's log was not captured"
    assert DEMO_PASSWORD not in log
