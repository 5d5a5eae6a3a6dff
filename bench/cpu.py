"""CPU time spent per request over one measured window, on both sides of the wire.

``CpuProbe`` samples, twice inside the measured window:

- the server process (with any children): its client-side CPU per request;
- the database's side. PostgreSQL runs one backend process per connection: the backends
  serving this server's connections (found by the server's own sockets, which is what
  ``pg_stat_activity.client_port`` shows, so other runs on the shared database are not
  counted). MariaDB is one process: the whole ``mariadbd`` listening on the port, which
  includes every other client of the shared server in that window.

The samples are taken inside the window and the figure is CPU / (req/s * the time between
the samples), so what happens at the window's edges (wrk connecting, and closing with
requests in flight, which makes the service discard those database connections) is left
out.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

__all__ = ["CpuProbe"]


def _cpu_s(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def _tree_cpu_s(pid: int) -> float:
    proc = psutil.Process(pid)
    total = _cpu_s(proc)
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += _cpu_s(child)
    return total


def _backend_pids(server_pid: int, db_port: int) -> list[int]:
    """Pids of the database processes at the other end of ``server_pid``'s connections."""
    proc = psutil.Process(server_pid)
    mine = {
        _port(c.laddr)
        for p in [proc, *proc.children(recursive=True)]
        for c in p.net_connections(kind="tcp")
        if _port(c.raddr) == db_port
    }
    return sorted(
        {
            c.pid
            for c in psutil.net_connections(kind="tcp")
            if c.pid is not None and _port(c.laddr) == db_port and _port(c.raddr) in mine
        }
    )


def _port(addr: Any) -> int | None:
    """The port of a psutil address (an empty tuple when the socket has none)."""
    return int(addr.port) if addr else None


def _listener_pid(db_port: int) -> int | None:
    for c in psutil.net_connections(kind="tcp"):
        if c.status == psutil.CONN_LISTEN and _port(c.laddr) == db_port and c.pid is not None:
            return c.pid
    return None


@dataclass
class CpuProbe:
    """CPU per request of a server and of the database side of its work, over one window."""

    server_pid: int
    engine: str  # "postgresql": per-connection backends; "none": no database
    db_port: int | None
    db_pids: list[int] = field(default_factory=list)  # found by begin()
    _server: list[float] = field(default_factory=lambda: [0.0, 0.0])  # before, after
    _wall: list[float] = field(default_factory=lambda: [0.0, 0.0])
    _db_before: dict[int, float] = field(default_factory=dict)
    _db_after: dict[int, float] = field(default_factory=dict)

    def _db_cpu(self) -> dict[int, float]:
        out = {}
        for pid in self.db_pids:
            with contextlib.suppress(psutil.Error):
                out[pid] = _cpu_s(psutil.Process(pid))
        return out

    def begin(self) -> None:
        """Find the database processes and take the first sample."""
        try:
            if self.db_port is None:
                self.db_pids = []
            elif self.engine == "postgresql":
                self.db_pids = _backend_pids(self.server_pid, self.db_port)
            else:
                listener = _listener_pid(self.db_port)
                self.db_pids = [] if listener is None else [listener]
        except psutil.Error:
            self.db_pids = []
        self._wall[0] = time.monotonic()
        self._server[0], self._db_before = _tree_cpu_s(self.server_pid), self._db_cpu()

    def end(self) -> None:
        self._wall[1] = time.monotonic()
        self._server[1], self._db_after = _tree_cpu_s(self.server_pid), self._db_cpu()

    def per_request(self, rps: float) -> dict[str, Any]:
        """Microseconds of CPU per request at the window's rate ``rps``: the server's, and
        the database side's (None when no database process was found)."""
        requests = rps * (self._wall[1] - self._wall[0])
        if requests <= 0:
            return {}
        server = (self._server[1] - self._server[0]) / requests * 1e6
        if self.db_port is None:
            return {"server_cpu_us": round(server, 1)}
        seen = [pid for pid in self._db_before if pid in self._db_after]
        db = sum(self._db_after[p] - self._db_before[p] for p in seen) / requests * 1e6
        gone = len(self._db_before) - len(seen)
        scope = (
            f"{len(seen)} backends of this server's connections"
            + (f" ({gone} ended inside the window, not counted)" if gone else "")
            if self.engine == "postgresql"
            else "whole mariadbd process (every client of the shared server)"
        )
        return {
            "server_cpu_us": round(server, 1),
            "db_cpu_us": round(db, 1) if seen else None,
            "db_cpu_scope": scope,
        }
