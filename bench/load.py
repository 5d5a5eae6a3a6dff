"""The one load generator: ``wrk`` (one thread) with a Lua POST script when it can run
(``ensure_wrk`` installs Debian's package when missing and we are root), else, as the
fallback, a multi-process Python client (asyncio, raw HTTP/1.1 keep-alive sockets).

Both send the same bodies (cycled per request) with the same headers to the same path and
report requests/s and latency percentiles over a measured window that follows a warm-up
window. Every loop is bounded by a deadline; a connection that stalls past it, a non-2xx
response and any socket error count as errors.
"""

from __future__ import annotations

import asyncio
import json
import math
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from array import array
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol, cast

__all__ = ["LoadResult", "Probe", "Workload", "ensure_wrk", "percentile", "run_load"]

_STALL_GRACE_S = 10.0


@dataclass(frozen=True)
class Workload:
    """What to send: a POST path, the JSON bodies to cycle through and extra headers."""

    path: str
    bodies: tuple[bytes, ...]
    headers: tuple[tuple[str, str], ...] = ()


class Probe(Protocol):
    """Sampled inside the measured window (e.g. ``bench.cpu``): wrk's connects and closes
    at the window's edges stay outside the sample."""

    def begin(self) -> None: ...

    def end(self) -> None: ...


@dataclass
class LoadResult:
    """One measured window."""

    generator: str
    concurrency: int
    duration_s: float
    requests: int
    errors: int
    rps: float
    p50_ms: float | None
    p99_ms: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_WRK_INSTALL_TIMEOUT_S = 300


def ensure_wrk(install: bool) -> str | None:
    """``None`` when wrk is on PATH (installed now if missing, ``install`` and root: Debian's
    ``wrk`` package), else why the Python fallback runs."""
    if shutil.which("wrk") is not None:
        return None
    if not install:
        return "wrk not on PATH"
    if os.geteuid() != 0:
        return "wrk not on PATH and not root (install it: apt-get install -y wrk)"
    print("bench: installing wrk (apt-get install -y wrk)", file=sys.stderr, flush=True)
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    install_argv = ["apt-get", "install", "-y", "wrk"]
    # A second try after refreshing the package lists when the first one fails.
    for argv in (install_argv, ["apt-get", "update"], install_argv):
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=_WRK_INSTALL_TIMEOUT_S, env=env
        )
        if shutil.which("wrk") is not None:
            return None
    return f"apt-get install -y wrk failed: {proc.stderr.strip()[-300:]}"


def percentile(sorted_values: list[float] | array[float], q: float) -> float | None:
    """Nearest-rank percentile of already sorted values (None when empty)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return float(sorted_values[rank - 1])


def run_load(
    url: str,
    work: Workload,
    *,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    cores: frozenset[int] | None,
    processes: int,
    use_wrk: bool,
    probe: Probe | None = None,
) -> LoadResult:
    """Drive ``url + work.path`` at ``concurrency`` connections and measure one window;
    ``probe`` is sampled at the window's edges."""
    if use_wrk:
        return _run_wrk(url, work, concurrency, duration_s, warmup_s, cores, probe)
    return _run_python(url, work, concurrency, duration_s, warmup_s, cores, processes, probe)


# ---------------------------------------------------------------- Python client


def _run_python(
    url: str,
    work: Workload,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    cores: frozenset[int] | None,
    processes: int,
    probe: Probe | None,
) -> LoadResult:
    host, port = _host_port(url)
    procs = max(1, min(processes, concurrency))
    shares = [concurrency // procs + (1 if i < concurrency % procs else 0) for i in range(procs)]
    start_at = time.monotonic() + 0.3 + 0.05 * procs  # let every worker connect first
    begin, end = start_at + warmup_s, start_at + warmup_s + duration_s
    # fork: workers start in milliseconds; the parent runs no event loop at this point.
    ctx: Any = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    queue: mp.Queue[tuple[int, int, bytes, str]] = ctx.Queue()
    workers = [
        ctx.Process(
            target=_worker_main,
            args=(host, port, work, n, i, start_at, begin, end, cores, queue),
            daemon=True,
        )
        for i, n in enumerate(shares)
    ]
    for w in workers:
        w.start()
    requests, errors, samples = 0, 0, array("d")
    try:
        if probe is not None:
            time.sleep(max(0.0, begin - time.monotonic()))
            probe.begin()
            time.sleep(max(0.0, end - time.monotonic()))
            probe.end()
        for _ in workers:
            done, errs, raw, failure = queue.get(
                timeout=end - time.monotonic() + _STALL_GRACE_S + 15
            )
            if failure:
                raise RuntimeError(f"load worker failed: {failure}")
            requests, errors = requests + done, errors + errs
            samples.frombytes(raw)
    finally:
        for w in workers:
            w.join(timeout=5)
            if w.is_alive():
                w.kill()
                w.join(timeout=5)
    ordered = sorted(samples)
    return LoadResult(
        "python",
        concurrency,
        duration_s,
        requests,
        errors,
        requests / duration_s,
        _ms(percentile(ordered, 50)),
        _ms(percentile(ordered, 99)),
    )


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


def _host_port(url: str) -> tuple[str, int]:
    hostport = url.split("://", 1)[1].split("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    return host, int(port)


def _worker_main(
    host: str,
    port: int,
    work: Workload,
    connections: int,
    index: int,
    start_at: float,
    begin: float,
    end: float,
    cores: frozenset[int] | None,
    queue: mp.Queue[tuple[int, int, bytes, str]],
) -> None:
    if cores:
        os.sched_setaffinity(0, cores)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # plain asyncio is slower but still correct
        pass
    requests = _build_requests(host, port, work)
    stats = _Stats(begin, end)
    failure = ""
    try:
        asyncio.run(_drive(host, port, requests, connections, index, start_at, stats))
    except Exception as exc:  # reported to the parent, which fails the case
        failure = f"{type(exc).__name__}: {exc}"
    queue.put((stats.done, stats.errors, stats.samples.tobytes(), failure))


def _build_requests(host: str, port: int, work: Workload) -> list[bytes]:
    head = f"POST {work.path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in work.headers)
    return [f"{head}Content-Length: {len(b)}\r\n\r\n".encode() + b for b in work.bodies]


class _Stats:
    """Counts completions inside [begin, end); latencies in seconds."""

    def __init__(self, begin: float, end: float) -> None:
        self.begin, self.end = begin, end
        self.done = 0
        self.errors = 0
        self.samples = array("d")

    def record(self, sent_at: float, now: float, ok: bool) -> None:
        if sent_at < self.begin or now >= self.end:
            return
        if ok:
            self.done += 1
            self.samples.append(now - sent_at)
        else:
            self.errors += 1


async def _drive(
    host: str,
    port: int,
    requests: list[bytes],
    connections: int,
    index: int,
    start_at: float,
    stats: _Stats,
) -> None:
    loop = asyncio.get_running_loop()
    protos: list[_Conn] = []
    for i in range(connections):
        offset = (index * 7919 + i * 104729) % len(requests)
        _, proto = await loop.create_connection(partial(_Conn, requests, offset, stats), host, port)
        protos.append(proto)
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    for proto in protos:
        proto.send()
    waits = [p.finished for p in protos]
    timeout = stats.end - time.monotonic() + _STALL_GRACE_S
    _, pending = await asyncio.wait(waits, timeout=max(0.1, timeout))
    stats.errors += len(pending)  # stalled connections: counted, then dropped
    for proto in protos:
        proto.close()


class _Conn(asyncio.Protocol):
    """One keep-alive connection sending one request at a time (closed loop)."""

    def __init__(self, requests: list[bytes], offset: int, stats: _Stats) -> None:
        self.requests, self.next, self.stats = requests, offset, stats
        self.buf = bytearray()
        self.sent_at = 0.0
        self.transport: asyncio.Transport | None = None
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport; cast, don't check.
        self.transport = cast(asyncio.Transport, transport)

    def send(self) -> None:
        if time.monotonic() >= self.stats.end:
            if not self.finished.done():
                self.finished.set_result(None)
            return
        request = self.requests[self.next]
        self.next = (self.next + 1) % len(self.requests)
        self.sent_at = time.monotonic()
        assert self.transport is not None
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        head_end = self.buf.find(b"\r\n\r\n")
        if head_end < 0:
            return
        length = _content_length(self.buf, head_end)
        if length is None:
            self._fail()
            return
        total = head_end + 4 + length
        if len(self.buf) < total:
            return
        ok = self.buf[9:10] == b"2"
        del self.buf[:total]
        self.stats.record(self.sent_at, time.monotonic(), ok)
        self.send()

    def _fail(self) -> None:
        self.stats.errors += 1
        self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.finished.done():
            self.stats.errors += 1
            self.finished.set_result(None)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        if not self.finished.done():
            self.finished.set_result(None)


def _content_length(buf: bytearray, head_end: int) -> int | None:
    # Servers under test always send Content-Length; anything else is an error here.
    head = bytes(buf[:head_end]).lower()
    marker = head.find(b"\r\ncontent-length:")
    if marker < 0:
        return None
    line_end = head.find(b"\r\n", marker + 2)
    value = head[marker + 17 : line_end if line_end >= 0 else None]
    try:
        return int(value.strip())
    except ValueError:
        return None


# ---------------------------------------------------------------- wrk

# Requests are built once per thread in init() (wrk.format per request costs wrk CPU), each
# with its own header table: wrk.format writes Content-Length into the table it is given.
# done() prints wrk's own counters and latency histogram (what --latency prints), in µs.
_LUA = r"""
local bodies = {%(bodies)s}
local path = %(path)s
local extra = {%(headers)s}
local prepared = {}
local n = #bodies
local i = 0
init = function(args)
  for k, body in ipairs(bodies) do
    local headers = {["Content-Type"] = "application/json"}
    for name, value in pairs(extra) do headers[name] = value end
    prepared[k] = wrk.format("POST", path, headers, body)
  end
end
request = function()
  i = (i %% n) + 1
  return prepared[i]
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCHJSON {\"requests\": %%d, \"duration_us\": %%d, \"non2xx\": %%d, \"socket_errors\": %%d, "
    .. "\"p50_us\": %%d, \"p90_us\": %%d, \"p99_us\": %%d, \"max_us\": %%d}\n",
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def _lua_script(work: Workload) -> str:
    return _LUA % {
        "bodies": ", ".join(json.dumps(b.decode()) for b in work.bodies),
        "path": json.dumps(work.path),
        "headers": ", ".join(f"[{json.dumps(k)}] = {json.dumps(v)}" for k, v in work.headers),
    }


def _run_wrk(
    url: str,
    work: Workload,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    cores: frozenset[int] | None,
    probe: Probe | None,
) -> LoadResult:
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(_lua_script(work))
        if warmup_s > 0:
            _wrk_once(url, script, concurrency, warmup_s, cores, None)
        out = _wrk_once(url, script, concurrency, duration_s, cores, probe)
    seconds = out["duration_us"] / 1e6
    failed = int(out["non2xx"] + out["socket_errors"])
    ok = int(out["requests"] - out["non2xx"])
    return LoadResult(
        "wrk",
        concurrency,
        seconds,
        ok,
        failed,
        ok / seconds,
        round(out["p50_us"] / 1000.0, 3),
        round(out["p99_us"] / 1000.0, 3),
    )


def _wrk_once(
    url: str,
    script: Path,
    concurrency: int,
    seconds: float,
    cores: frozenset[int] | None,
    probe: Probe | None,
) -> dict[str, float]:
    whole = max(1, round(seconds))
    # One thread: wrk's event loop drives 64 connections on one core with room to spare.
    argv = ["wrk", "-t1", f"-c{concurrency}", f"-d{whole}s", "--timeout", "10s"]
    argv += ["-s", str(script), url]
    started = time.monotonic()
    with subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=(lambda: os.sched_setaffinity(0, cores)) if cores else None,
    ) as proc:
        if probe is not None:
            # Sampled inside the window: when wrk closes its connections, a server may drop
            # what was in flight (the service discards those database connections).
            inset = min(0.5, 0.1 * whole)
            time.sleep(inset)
            probe.begin()
            time.sleep(max(0.0, started + whole - inset - time.monotonic()))
            probe.end()
        stdout, stderr = proc.communicate(timeout=whole + 30)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk exited {proc.returncode}: {stderr[-500:]}")
    for line in stdout.splitlines():
        if line.startswith("BENCHJSON "):
            parsed: dict[str, float] = json.loads(line[len("BENCHJSON ") :])
            return parsed
    raise RuntimeError(f"wrk printed no summary: {stdout[-500:]} {stderr[-500:]}")
