"""Run a real ``dbpool serve`` process for end-to-end tests.

Each server gets its own directory (the SQLite registry, the key file, the captured log), a
free loopback port and freshly generated ``DBPOOL_ENCRYPTION_KEYS``. ``start()`` returns once
``/healthz`` answers; ``stop()`` sends SIGTERM and waits, killing after ``kill_after`` seconds.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import httpx
from cryptography.fernet import Fernet

__all__ = ["CLEAN_EXIT_CODES", "DbpoolServer", "ServerFailed", "dbpool_command", "free_port"]

# uvicorn shuts down gracefully on SIGTERM, then re-raises the signal; `dbpool serve` answers
# that with exit 0, so a clean stop is 0 (never "killed by SIGTERM", SIGKILL or 1).
CLEAN_EXIT_CODES = frozenset({0})
_START_ATTEMPTS = 3  # a free port can be taken between probing it and binding it


class ServerFailed(RuntimeError):
    """The server did not come up (the message carries the tail of its log)."""


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dbpool_command() -> list[str]:
    """The installed ``dbpool`` console script next to this interpreter (the venv's)."""
    script = Path(sys.executable).with_name("dbpool")
    if script.exists():
        return [str(script)]
    found = shutil.which("dbpool")
    if found is None:
        raise ServerFailed("no `dbpool` console script: pip install -e . first")
    return [found]


class DbpoolServer:
    """One ``dbpool serve`` child process with an isolated SQLite registry."""

    def __init__(
        self,
        workdir: Path,
        *,
        env: Mapping[str, str] | None = None,
        args: tuple[str, ...] = ("serve",),
        startup_timeout: float = 30.0,
        command: Sequence[str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "server.log"
        self.args = args
        self.command = list(command) if command is not None else dbpool_command()
        self.startup_timeout = startup_timeout
        self.encryption_key = Fernet.generate_key().decode()
        self.extra_env = dict(env or {})
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    def __repr__(self) -> str:
        pid = self.process.pid if self.process else None
        return f"<DbpoolServer port={self.port} pid={pid} returncode={self.returncode}>"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def env(self) -> dict[str, str]:
        """The child's environment: inherited, minus any DBPOOL_* of ours, plus test settings."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("DBPOOL_")}
        env.update(
            DBPOOL_HOST="127.0.0.1",
            DBPOOL_PORT=str(self.port),
            DBPOOL_REGISTRY_URL=f"sqlite+aiosqlite:///{self.workdir / 'registry.sqlite3'}",
            DBPOOL_ENCRYPTION_KEYS=self.encryption_key,
            DBPOOL_KEY_FILE=str(self.workdir / ".dbpool.key"),
            PYTHONUNBUFFERED="1",
        )
        env.update(self.extra_env)
        return env

    def start(self) -> DbpoolServer:
        """Start the process and wait until ``/healthz`` answers 200."""
        for attempt in range(_START_ATTEMPTS):
            self.port = int(self.extra_env.get("DBPOOL_PORT", free_port()))
            self._spawn()
            if self._wait_healthy():
                return self
            self.stop()
            if attempt + 1 == _START_ATTEMPTS or "address already in use" not in self.log():
                break
        raise ServerFailed(f"dbpool serve did not become healthy:\n{self.log()[-4000:]}")

    def stop(self, kill_after: float = 15.0) -> int | None:
        """SIGTERM, wait up to ``kill_after`` seconds, then SIGKILL; returns the exit code."""
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(kill_after)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return self.returncode

    def stopped_cleanly(self) -> bool:
        """The process exited after a complete graceful shutdown (lifespan finished)."""
        return self.returncode in CLEAN_EXIT_CODES and (
            "Application shutdown complete" in self.log()
        )

    def log(self) -> str:
        """Everything the process wrote to stdout and stderr so far."""
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def client(self, **kwargs: Any) -> httpx.Client:
        """An httpx client bound to this server."""
        return httpx.Client(base_url=self.base_url, timeout=30.0, **kwargs)

    def _spawn(self) -> None:
        self._log_file = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [*self.command, *self.args],
            cwd=self.workdir,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )

    def _wait_healthy(self) -> bool:
        deadline = time.monotonic() + self.startup_timeout
        with httpx.Client(timeout=2.0) as http:
            while time.monotonic() < deadline:
                if self.returncode is not None:
                    return False
                try:
                    if http.get(f"{self.base_url}/healthz").status_code == 200:
                        return True
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        return False
