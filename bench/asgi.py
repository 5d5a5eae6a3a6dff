"""The app alone, no HTTP server (a developer tool): ``python -m bench.asgi --engine postgresql
--case point``. Calls the service's ASGI app (with auth on, as ``bench.run`` serves it;
``--no-auth`` turns it off), or with ``--baseline`` the raw-driver baseline's and with
``--sqlalchemy`` the hand-written SQLAlchemy service's, directly from 64 tasks in this
process, pinned to the last CPU, and prints CPU per request of each of ``--runs`` windows
and their median: what the app costs above uvicorn, the steadiest figure on a shared machine.
``--profile out.prof`` writes a cProfile of the measured windows, ``--spy out.txt`` a py-spy
record of them (collapsed stacks; ``python -m bench.layers out.txt`` sums them by layer).
``--stub`` replaces the database work with a canned point-read row (the service: the pool's
``run`` and ``run_query``; the baselines: their pool or engine) to measure the HTTP side
alone, steadily: no database, no driver, no pool. ``--tracing ours`` traces
every request (spans batched to an exporter that drops them); ``--tracing contrib`` does the
same with opentelemetry-instrumentation-asgi's middleware in place of ours (install it first)
for the HTTP span."""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from bench import fixtures
from bench.baselines import QUERY_PATH
from bench.client import register
from bench.procs import pin, plan_cores
from bench.service import baseline_env

__all__ = ["main"]

Message = dict[str, Any]


class _Call:
    """One request: the body once, then a receive that waits (as uvicorn's does)."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.sent = False
        self.status = 0

    async def receive(self) -> Message:
        if not self.sent:
            self.sent = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]


def _scope(path: str, token: str | None) -> dict[str, Any]:
    auth = [(b"authorization", f"Bearer {token}".encode())] if token else []
    return {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
        "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
        "root_path": "", "query_string": b"", "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "headers": [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"),
                    (b"user-agent", b"bench"), (b"accept", b"*/*"), *auth],
    }


def _tracing(kind: str) -> Any:
    """``None`` (the default: off unless OTEL_* asks), or tracing to a dropping exporter."""
    if kind == "off":
        return None
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    from app.tracing import OtelTracing

    class Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop()))  # as OTEL_* builds it
    if kind == "ours":
        return OtelTracing(provider)
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    class Contrib(OtelTracing):
        def install(self, app: Any) -> None:
            app.add_middleware(OpenTelemetryMiddleware, tracer_provider=provider)

    return Contrib(provider)


_QUERY_KEY = "bench-asgi-query-key-0123456789abcdef"
_ADMIN_KEY = "bench-asgi-admin-key-0123456789abcdef"


_ROW = {"id": 7, "name": "item 7", "category": "c7", "price": "7.00", "note": "bench row"}


def _stub_service() -> None:
    """The service's database work replaced by ``_ROW``: ``ManagedPool.run`` calls the work
    with no connection, and ``run_query`` (wherever the app imported it) charges the budget
    and returns the row. Everything above (route, pool lookup, metrics, envelope) runs."""
    import sys

    from app.pools import query as query_module
    from app.pools.managed_pool import ManagedPool

    original = query_module.run_query

    async def run_query(conn: Any, config: Any, sql: str, params: Any = None, *,
                        budget: Any = None, **_: Any) -> Any:
        if budget is not None:
            budget.charge([_ROW])
        return query_module.QueryResult(columns=list(_ROW), rows=[_ROW], row_count=1,
                                        truncated=False, duration_ms=0.1)

    async def run(self: ManagedPool, work: Any) -> Any:
        return await work(None)

    for module in list(sys.modules.values()):
        name = getattr(module, "__name__", "") or ""
        if name.startswith("app.") and getattr(module, "run_query", None) is original:
            module.run_query = run_query  # type: ignore[attr-defined]
    ManagedPool.run = run  # type: ignore[method-assign]


class _StubConnection:
    """What the baselines' routes use of a connection, answering ``_ROW``."""

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:  # asyncpg
        return [dict(_ROW)]

    async def execute(self, statement: Any, params: Any = None) -> Any:  # SQLAlchemy
        return self

    def keys(self) -> list[str]:
        return list(_ROW)

    def mappings(self) -> list[dict[str, Any]]:
        return [dict(_ROW)]


class _StubPool:
    """``pool.acquire()`` (asyncpg) and ``engine.connect()`` (SQLAlchemy) stand-in."""

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[_StubConnection]:
        yield _StubConnection()

    connect = acquire


@asynccontextmanager
async def _service(db: fixtures.DbTarget, tmp: Path, tracing: str = "off",
                   auth: bool = True) -> AsyncIterator[tuple[Any, int]]:
    from app.main import create_app
    from app.registry.crypto import generate_key
    from app.registry.migrations import upgrade_to_head
    from app.settings import Settings

    url = f"sqlite+aiosqlite:///{tmp}/reg.sqlite3"
    await upgrade_to_head(url)
    settings = Settings(registry_url=url, encryption_keys=[SecretStr(generate_key())],
                        key_file=tmp / "k", log_level="WARNING",
                        api_key=SecretStr(_QUERY_KEY) if auth else None,
                        admin_api_key=SecretStr(_ADMIN_KEY) if auth else None)
    app = create_app(settings, tracing=_tracing(tracing))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {_ADMIN_KEY}"} if auth else {}
        async with httpx.AsyncClient(transport=transport, base_url="http://t",
                                     headers=headers) as client:
            yield app, await register(client, "asgi-bench", db)


@asynccontextmanager
async def _baseline(db: fixtures.DbTarget, sqlalchemy: bool,
                    stub: bool) -> AsyncIterator[tuple[Any, int]]:
    os.environ.update(baseline_env(db, 10))
    if sqlalchemy:
        from bench.baselines.sqlalchemy_app import create_app
    elif db is fixtures.PG:
        from bench.baselines.asyncpg_app import create_app
    else:
        from bench.baselines.aiomysql_app import create_app
    app = create_app()
    async with app.router.lifespan_context(app):
        if not stub:
            yield app, 0
            return
        if db is not fixtures.PG and not sqlalchemy:
            raise SystemExit("--stub --baseline: the asyncpg baseline only")
        name = "engine" if sqlalchemy else "pool"
        real = getattr(app.state, name)
        setattr(app.state, name, _StubPool())
        try:
            yield app, 0
        finally:
            setattr(app.state, name, real)  # closed by the lifespan


async def _drive(args: argparse.Namespace) -> None:
    db = fixtures.PG if args.engine == "postgresql" else fixtures.MY
    bodies = fixtures.cases_for((args.case,))[0].bodies
    with tempfile.TemporaryDirectory() as tmp:
        baseline = args.baseline or args.sqlalchemy
        if args.stub and not baseline:
            _stub_service()
        target = (_baseline(db, args.sqlalchemy, args.stub) if baseline
                  else _service(db, Path(tmp), args.tracing, not args.no_auth))
        async with target as (app, cid):
            token = None if baseline or args.no_auth else _QUERY_KEY
            scope = _scope(QUERY_PATH.format(connection_id=cid), token)
            done = 0
            failed = 0
            deadline = 0.0
            left = 0  # with --requests: requests still to send in this window

            async def worker(k: int) -> None:
                nonlocal done, failed, left
                i = k
                while (left > 0) if args.requests else (time.monotonic() < deadline):
                    left -= 1
                    call = _Call(bodies[i % len(bodies)])
                    i += 7
                    await app(dict(scope), call.receive, call.send)
                    done += 1
                    failed += call.status != 200

            deadline, left = time.monotonic() + 1.0, args.requests // 4
            await asyncio.gather(*(worker(k) for k in range(args.tasks)))
            profiler = cProfile.Profile(time.process_time) if args.profile else None
            figures: list[float] = []
            spy = _spy(args.spy, args.seconds * args.runs) if args.spy else None
            for _ in range(args.runs):
                done = failed = 0
                started, cpu = time.monotonic(), time.process_time()
                deadline, left = started + args.seconds, args.requests
                if profiler:
                    profiler.enable()
                await asyncio.gather(*(worker(k) for k in range(args.tasks)))
                if profiler:
                    profiler.disable()
                wall = time.monotonic() - started
                per = (time.process_time() - cpu) / max(done, 1) * 1e6
                figures.append(per)
                print(f"  {done / wall:.0f} req/s, {per:.0f} us CPU per request, {failed} failed")
            if profiler:
                profiler.dump_stats(args.profile)
            if spy is not None:
                spy.wait(timeout=30)
            auth = "off" if args.no_auth else "on"
            name = ("baseline sqlalchemy" if args.sqlalchemy else "baseline" if args.baseline
                    else f"service (tracing {args.tracing}, auth {auth})")
            name += " stubbed" if args.stub else ""
            print(f"{name} {args.engine} {args.case}: median {statistics.median(figures):.0f} "
                  f"us CPU per request of {args.runs} runs")


def _spy(path: str, seconds: float) -> subprocess.Popen[bytes]:
    """py-spy recording this process for ``seconds`` (started now; it attaches in ~0.1 s)."""
    spy = Path(sys.executable).with_name("py-spy")
    return subprocess.Popen(
        [str(spy), "record", "-p", str(os.getpid()), "-d", str(max(1, int(seconds))),
         "-r", "500", "--format", "raw", "-o", path, "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--engine", default="postgresql")
    parser.add_argument("--case", default="point")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--requests", type=int, default=0,
                        help="windows of this many requests instead of --seconds (under "
                        "valgrind: instructions per request)")
    parser.add_argument("--tasks", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3, help="measured windows (median)")
    parser.add_argument("--baseline", action="store_true", help="the raw-driver baseline")
    parser.add_argument("--sqlalchemy", action="store_true",
                        help="the hand-written SQLAlchemy baseline")
    parser.add_argument("--no-auth", action="store_true", help="the service with auth off")
    parser.add_argument("--stub", action="store_true",
                        help="a canned row instead of the database: the HTTP side alone")
    parser.add_argument("--spy", default="", help="py-spy raw stacks of the measured windows")
    parser.add_argument("--profile", default="")
    parser.add_argument("--tracing", choices=("off", "ours", "contrib"), default="off")
    args = parser.parse_args(argv)
    pin(os.getpid(), plan_cores().server)
    import uvloop

    uvloop.run(_drive(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
