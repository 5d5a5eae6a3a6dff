"""The app alone, no HTTP server (a developer tool): ``python -m bench.asgi --engine postgresql
--case point``. Calls the service's ASGI app (and, with ``--baseline``, the raw-driver
baseline's) directly from 64 tasks in this process, pinned to the last CPU, and prints CPU
per request: what the app costs above uvicorn, the steadiest figure on a shared machine.
``--profile out.prof`` writes a cProfile of the measured window. ``--tracing ours`` traces
every request (spans batched to an exporter that drops them); ``--tracing contrib`` does the
same with opentelemetry-instrumentation-asgi's middleware in place of ours (install it first)
for the HTTP span."""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
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


def _scope(path: str) -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
        "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
        "root_path": "", "query_string": b"", "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "headers": [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"),
                    (b"user-agent", b"bench"), (b"accept", b"*/*")],
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


@asynccontextmanager
async def _service(db: fixtures.DbTarget, tmp: Path,
                   tracing: str = "off") -> AsyncIterator[tuple[Any, int]]:
    from app.main import create_app
    from app.registry.crypto import generate_key
    from app.registry.migrations import upgrade_to_head
    from app.settings import Settings

    url = f"sqlite+aiosqlite:///{tmp}/reg.sqlite3"
    await upgrade_to_head(url)
    settings = Settings(registry_url=url, encryption_keys=[SecretStr(generate_key())],
                        key_file=tmp / "k", log_level="WARNING")
    app = create_app(settings, tracing=_tracing(tracing))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield app, await register(client, "asgi-bench", db)


@asynccontextmanager
async def _baseline(db: fixtures.DbTarget) -> AsyncIterator[tuple[Any, int]]:
    os.environ.update(baseline_env(db, 10))
    if db is fixtures.PG:
        from bench.baselines.asyncpg_app import create_app
    else:
        from bench.baselines.aiomysql_app import create_app
    app = create_app()
    async with app.router.lifespan_context(app):
        yield app, 0


async def _drive(args: argparse.Namespace) -> None:
    db = fixtures.PG if args.engine == "postgresql" else fixtures.MY
    bodies = fixtures.cases_for((args.case,))[0].bodies
    with tempfile.TemporaryDirectory() as tmp:
        target = _baseline(db) if args.baseline else _service(db, Path(tmp), args.tracing)
        async with target as (app, cid):
            scope = _scope(QUERY_PATH.format(connection_id=cid))
            done = 0
            failed = 0
            deadline = 0.0

            async def worker(k: int) -> None:
                nonlocal done, failed
                i = k
                while time.monotonic() < deadline:
                    call = _Call(bodies[i % len(bodies)])
                    i += 7
                    await app(dict(scope), call.receive, call.send)
                    done += 1
                    failed += call.status != 200

            deadline = time.monotonic() + 1.0
            await asyncio.gather(*(worker(k) for k in range(args.tasks)))
            done = failed = 0
            profiler = cProfile.Profile(time.process_time) if args.profile else None
            started, cpu = time.monotonic(), time.process_time()
            deadline = started + args.seconds
            if profiler:
                profiler.enable()
            await asyncio.gather(*(worker(k) for k in range(args.tasks)))
            if profiler:
                profiler.disable()
                profiler.dump_stats(args.profile)
            wall = time.monotonic() - started
            per = (time.process_time() - cpu) / max(done, 1) * 1e6
            name = "baseline" if args.baseline else f"service (tracing {args.tracing})"
            print(f"{name} {args.engine} {args.case}: {done / wall:.0f} req/s, "
                  f"{per:.0f} us CPU per request, {failed} failed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--engine", default="postgresql")
    parser.add_argument("--case", default="point")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--tasks", type=int, default=64)
    parser.add_argument("--baseline", action="store_true")
    parser.add_argument("--profile", default="")
    parser.add_argument("--tracing", choices=("off", "ours", "contrib"), default="off")
    args = parser.parse_args(argv)
    pin(os.getpid(), plan_cores().server)
    import uvloop

    uvloop.run(_drive(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
