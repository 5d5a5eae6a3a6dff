"""The README's run command, verbatim, on a fresh copy of the project: a new venv, an install,
and `dbpool serve` on the embedded SQLite registry, answering /healthz with no other server."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.support.project import fresh_copy
from tests.support.server import free_port

ROOT = Path(__file__).resolve().parents[2]
STARTUP_BUDGET = 300.0  # seconds: creating a venv and installing the package from the index


def _run_command() -> str:
    quick = (ROOT / "README.md").read_text().split("## Quick start", 1)[1]
    command = re.findall(r"```bash\n(.*?)\n```", quick, re.DOTALL)[0]
    assert "dbpool serve" in command, command
    return command


@pytest.mark.slow
def test_readme_run_command_serves_healthz_from_a_fresh_copy(tmp_path: Path) -> None:
    project = tmp_path / "dbpool"
    fresh_copy(project)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DBPOOL_", "VIRTUAL_ENV"))}
    env["DBPOOL_PORT"] = str(port)  # the command itself is unchanged
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(
        ["bash", "-c", _run_command()], cwd=project, env=env, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + STARTUP_BUDGET
        while True:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.5)
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
        assert ready.status_code == 200, ready.text
        assert (project / "dbpool.sqlite3").exists(), "not the embedded SQLite registry"
        assert (project / ".dbpool.key").stat().st_mode & 0o777 == 0o600
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
        log.close()
