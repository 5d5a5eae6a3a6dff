"""The README's examples run verbatim against a live ``dbpool serve``; its tables are complete.

Example blocks are the ```bash fences right after an ``<!-- readme-example: NAME -->`` line.
The only substitution is the base URL (the server under test listens on a free port).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
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
    "register", "list", "test", "query", "transaction", "pool-status", "metrics", "history",
]


def readme_examples() -> dict[str, str]:
    return {name: body for name, body in EXAMPLE.findall(README)}


def run_block(body: str, base_url: str) -> str:
    script = body.replace(DOCUMENTED_URL, base_url)
    assert base_url in script, "an example does not use the documented base URL"
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


@pytest.mark.postgresql
def test_readme_examples_run_verbatim(start_server: StartServer) -> None:
    server = start_server(env={"DBPOOL_LOG_LEVEL": "DEBUG"})
    examples = readme_examples()
    out = {name: run_block(examples[name], server.base_url) for name in EXPECTED}

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
        assert dbs.PG_PASSWORD not in out[name], f"{name} response shows the password"
    server.stop()
    assert server.stopped_cleanly()
    log = server.log()
    assert "auth is OFF" in log, "the server's log was not captured"
    assert dbs.PG_PASSWORD not in log
