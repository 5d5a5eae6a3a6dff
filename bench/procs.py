"""Server processes for the benchmark: start pinned, wait until ready, always stop.

Every process started here is stopped by ``ProcessGroup.stop_all`` (SIGTERM, then SIGKILL
after a grace period), which ``run.py`` calls in a ``finally``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

__all__ = ["CorePlan", "ProcessGroup", "Server", "free_port", "plan_cores"]

LOOPBACK = "127.0.0.1"
_READY_TIMEOUT_S = 30.0
_STOP_GRACE_S = 5.0


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class CorePlan:
    """Which CPUs the servers and the load generator may use (None: not pinned)."""

    server: frozenset[int] | None
    load: frozenset[int] | None

    def describe(self) -> dict[str, list[int] | None]:
        return {
            "server_cores": sorted(self.server) if self.server else None,
            "load_cores": sorted(self.load) if self.load else None,
        }


def plan_cores() -> CorePlan:
    """Servers on the last CPU, the load generator on the others; no pinning on one CPU."""
    try:
        cores = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return CorePlan(None, None)
    if len(cores) < 2:
        return CorePlan(None, None)
    return CorePlan(frozenset(cores[-1:]), frozenset(cores[:-1]))


def pin(pid: int, cores: frozenset[int] | None) -> bool:
    """Pin ``pid`` to ``cores``; False when the platform refuses (the run goes on unpinned)."""
    if not cores:
        return False
    try:
        os.sched_setaffinity(pid, cores)
    except (AttributeError, OSError):
        return False
    return True


@dataclass
class Server:
    """One HTTP server process on loopback."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    pinned: bool = False

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def log_tail(self, limit: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""


@dataclass
class ProcessGroup:
    """Owns every server process of a run."""

    log_dir: Path
    cores: frozenset[int] | None
    servers: list[Server] = field(default_factory=list)

    def start(self, name: str, argv: list[str], env: dict[str, str], port: int) -> Server:
        """Start ``argv`` (stdout+stderr to a log file), pinned to the server cores."""
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        server = Server(name, port, proc, log_path, pinned=pin(proc.pid, self.cores))
        self.servers.append(server)
        return server

    def wait_ready(self, server: Server, path: str = "/healthz") -> None:
        """Poll ``path`` until it answers 200; raise with the log tail when it never does."""
        deadline = time.monotonic() + _READY_TIMEOUT_S
        with httpx.Client(base_url=server.url, timeout=2.0) as client:
            while time.monotonic() < deadline:
                if server.proc.poll() is not None:
                    break
                try:
                    if client.get(path).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
        raise RuntimeError(f"{server.name} did not become ready:\n{server.log_tail()}")

    def stop(self, server: Server) -> None:
        """SIGTERM the process group, then SIGKILL after a grace period."""
        if server.proc.poll() is None:
            _signal_group(server.proc, signal.SIGTERM)
            try:
                server.proc.wait(timeout=_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                _signal_group(server.proc, signal.SIGKILL)
                server.proc.wait(timeout=_STOP_GRACE_S)
        if server in self.servers:
            self.servers.remove(server)

    def stop_all(self) -> None:
        for server in list(self.servers):
            try:
                self.stop(server)
            except Exception as exc:  # keep stopping the others
                print(f"bench: could not stop {server.name}: {exc}", file=sys.stderr)


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    # The server runs in its own session: signal the group so no child survives it.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
