"""``python -m bench.run [--quick | --tiny] [--json out.json] [--no-service]``

Starts ``dbpool serve`` (auth on), the raw-driver baselines and the hand-written SQLAlchemy
service as real processes, drives each with the same load generator (wrk when it can run,
installed when missing and root; else the Python fallback) and samples the CPU each spends
per request, on the server and on the database side, then measures the extras (memory,
pool-status and ``/metrics`` at scale, fail-fast with an open circuit, recovery) on a
second, fresh service process.
Every process is stopped on the way out, even on failure. Exit status 1 when any
measurement failed (goals missed do not fail the run: they are reported).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import fixtures, load, report
from bench.baselines import QUERY_PATH
from bench.client import register
from bench.cpu import CpuProbe
from bench.faults import measure_fail_fast, measure_recovery
from bench.procs import CorePlan, ProcessGroup, Server, free_port, plan_cores
from bench.scale import ScaleSize, measure_scale
from bench.service import baseline_argv, baseline_env, raise_id_floor, start_service

__all__ = ["Mode", "main"]

POOL_SIZE = 10


@dataclass(frozen=True)
class Mode:
    name: str
    concurrency: tuple[int, ...]
    cases: tuple[str, ...]
    duration_s: float
    warmup_s: float
    repeat: int
    asyncmy_cases: tuple[str, ...]  # cases run on the asyncmy service at the top concurrency
    scale: ScaleSize
    fault_samples: int
    client_procs: int = 2


MODES = {
    "full": Mode(
        "full",
        (1, 16, 64),
        ("select1", "point", "rows100"),
        10.0,
        2.0,
        3,
        ("select1", "point", "rows100"),
        ScaleSize(1000, 500, {"postgresql": 20, "mariadb": 100}, 500, 50),
        500,
    ),
    "quick": Mode(
        "quick",
        (1, 16, 64),
        ("select1", "point", "rows100"),
        1.0,  # wrk takes whole seconds: 1 s warm-up + 1 s window per measurement
        0.5,
        1,
        ("point", "rows100"),
        ScaleSize(1000, 500, {"postgresql": 20, "mariadb": 40}, 200, 30),
        200,
    ),
    "tiny": Mode(
        "tiny",
        (1, 4),
        ("point",),
        0.3,  # wrk: 1 s, no warm-up
        0.0,
        1,
        (),
        ScaleSize(20, 10, {"postgresql": 2, "mariadb": 2}, 20, 5),
        20,
    ),
}


@dataclass
class Run:
    mode: Mode
    cores: CorePlan
    group: ProcessGroup
    workdir: Path
    use_wrk: bool
    generator: str  # what the output and the JSON say about the load generator
    engines: tuple[str, ...] = ("postgresql", "mariadb")
    constant: bool = True
    rows: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # The service runs with auth on, like a deployment: every target gets the same header.
    query_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    admin_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        return (("Authorization", f"Bearer {self.query_key}"),)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="short windows (< 3 minutes)")
    size.add_argument("--tiny", action="store_true", help="seconds: CI smoke test only")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    parser.add_argument("--no-service", action="store_true", help="baselines only")
    parser.add_argument(
        "--no-wrk", action="store_true", help="use the Python client (never installs wrk)"
    )
    parser.add_argument("--engines", help="comma list: postgresql,mariadb (default both)")
    parser.add_argument("--cases", help="comma list: select1,point,rows100 (default: the mode's)")
    parser.add_argument("--concurrency", help="comma list of concurrencies (default: the mode's)")
    parser.add_argument("--no-extras", action="store_true", help="throughput only")
    parser.add_argument("--no-asyncmy", action="store_true", help="skip the asyncmy service")
    parser.add_argument("--no-constant", action="store_true", help="skip the HTTP ceiling")
    return parser.parse_args(argv)


def _narrowed(mode: Mode, args: argparse.Namespace) -> Mode:
    """The mode with the command line's filters applied (a faster measure-change loop)."""
    changes: dict[str, Any] = {}
    if args.cases:
        changes["cases"] = tuple(args.cases.split(","))
    if args.concurrency:
        changes["concurrency"] = tuple(int(c) for c in args.concurrency.split(","))
    if args.no_asyncmy:
        changes["asyncmy_cases"] = ()
    return replace(mode, **changes)


def _measure(
    run: Run,
    server: Server,
    target: str,
    engine: str,
    case: fixtures.Case,
    c: int,
    connection_id: int,
) -> None:
    path = QUERY_PATH.format(connection_id=connection_id)
    work = load.Workload(path, case.bodies, run.headers)
    row: dict[str, Any] = {"target": target, "engine": engine, "case": case.name, "concurrency": c}
    db_port = {"postgresql": fixtures.PG.port, "mariadb": fixtures.MY.port}.get(engine)
    try:
        results = []
        for _ in range(run.mode.repeat):
            probe = CpuProbe(server.proc.pid, engine, db_port)
            result = load.run_load(
                server.url,
                work,
                concurrency=c,
                duration_s=run.mode.duration_s,
                warmup_s=run.mode.warmup_s,
                cores=run.cores.load,
                processes=run.mode.client_procs,
                use_wrk=run.use_wrk,
                probe=probe,
            )
            results.append((result, probe.per_request(result.rps)))
        results.sort(key=lambda pair: pair[0].rps)
        best, cpu = results[len(results) // 2]  # the median run
        row |= best.to_dict() | {"rps": round(best.rps, 1)} | cpu
        if run.mode.repeat > 1:
            row["rps_runs"] = [round(r.rps, 1) for r, _ in results]
        failed = sum(r.errors for r, _ in results)
        if best.requests == 0:
            run.errors.append(f"{target} {engine} {case.name} c={c}: no successful request")
        elif failed:
            row["error"] = f"{failed} failed requests (non-2xx, socket errors or stalls)"
            run.errors.append(f"{target} {engine} {case.name} c={c}: {row['error']}")
    except Exception as exc:
        row["error"] = f"{type(exc).__name__}: {exc}"
        run.errors.append(f"{target} {engine} {case.name} c={c}: {row['error']}")
    run.rows.append(row)
    print(
        f"  {target:<22} {engine:<10} {case.name:<8} c={c:<3} {row.get('rps', 'FAIL')}",
        file=sys.stderr,
        flush=True,
    )


def _start_servers(run: Run, with_service: bool) -> dict[str, Server]:
    servers: dict[str, Server] = {}
    specs: list[tuple[str, str, fixtures.DbTarget | None]] = [("constant", "constant_app", None)]
    for db in (d for d in (fixtures.PG, fixtures.MY) if d.engine in run.engines):
        raw = "asyncpg_app" if db is fixtures.PG else "aiomysql_app"
        specs.append((f"baseline-{db.engine}", raw, db))
        specs.append((f"sqlalchemy-{db.engine}", "sqlalchemy_app", db))
    for name, module, target in specs:
        port = free_port()
        servers[name] = run.group.start(
            name, baseline_argv(module, port), baseline_env(target, POOL_SIZE), port
        )
    if with_service:
        auth = {"DBPOOL_API_KEY": run.query_key, "DBPOOL_ADMIN_API_KEY": run.admin_key}
        servers["service"] = start_service(run.group, "service", run.workdir / "service", auth)
        if run.mode.asyncmy_cases and "mariadb" in run.engines:
            servers["service-asyncmy"] = start_service(
                run.group,
                "service-asyncmy",
                run.workdir / "service-asyncmy",
                auth | {"DBPOOL_MYSQL_DRIVER": "asyncmy"},
            )
    for server in servers.values():
        run.group.wait_ready(server)
    for name in ("service", "service-asyncmy"):
        if name in servers:
            raise_id_floor(run.workdir / name)
    return servers


async def _register_all(run: Run, servers: dict[str, Server]) -> dict[tuple[str, str], int]:
    import httpx

    ids: dict[tuple[str, str], int] = {}
    admin = {"Authorization": f"Bearer {run.admin_key}"}
    for name in ("service", "service-asyncmy"):
        if name not in servers:
            continue
        async with httpx.AsyncClient(
            base_url=servers[name].url, timeout=30.0, headers=admin
        ) as http:
            for db in (d for d in (fixtures.PG, fixtures.MY) if d.engine in run.engines):
                if name == "service-asyncmy" and db is fixtures.PG:
                    continue
                ids[(name, db.engine)] = await register(
                    http, f"bench-{db.engine}", db, maxConnections=POOL_SIZE
                )
    return ids


def _throughput(run: Run, servers: dict[str, Server], ids: dict[tuple[str, str], int]) -> None:
    top = max(run.mode.concurrency)
    for case in fixtures.cases_for(run.mode.cases[:1] if run.constant else ()):
        constant = fixtures.Case("constant", case.bodies)
        for c in run.mode.concurrency:
            _measure(run, servers["constant"], "constant", "none", constant, c, 0)
    for db in (d for d in (fixtures.PG, fixtures.MY) if d.engine in run.engines):
        for case in fixtures.cases_for(run.mode.cases):
            for c in run.mode.concurrency:
                # Baselines and service back to back, so drift hits them alike.
                for name in (f"baseline-{db.engine}", f"sqlalchemy-{db.engine}"):
                    _measure(run, servers[name], name, db.engine, case, c, 0)
                for name in ("service", "service-asyncmy"):
                    if (name, db.engine) not in ids:
                        continue
                    if name == "service-asyncmy" and (
                        c != top or case.name not in run.mode.asyncmy_cases
                    ):
                        continue
                    _measure(run, servers[name], name, db.engine, case, c, ids[(name, db.engine)])


def _extras(run: Run) -> dict[str, Any]:
    """Scale and fault figures on a fresh service, each reported on its own."""
    # The default history ring (900 s / 5 s = 180 samples) sampled every second, so every
    # live pool is in the history within a second: the same bytes per pool, no 5 s wait.
    history = {"DBPOOL_HISTORY_INTERVAL_SECONDS": "1", "DBPOOL_HISTORY_WINDOW_SECONDS": "180"}
    server = start_service(run.group, "service-extras", run.workdir / "service-extras", history)
    jobs: dict[str, Callable[[], Coroutine[Any, Any, dict[str, Any]]]] = {
        "scale": lambda: measure_scale(server.url, server.proc.pid, run.mode.scale),
        "circuit_open": lambda: measure_fail_fast(server.url, run.mode.fault_samples),
        "recovery": lambda: measure_recovery(server.url),
    }
    out: dict[str, Any] = {}
    try:
        run.group.wait_ready(server)
        raise_id_floor(run.workdir / "service-extras")
        for name, job in jobs.items():
            print(f"  extras: {name}", file=sys.stderr, flush=True)
            try:
                out[name] = asyncio.run(job())
            except Exception as exc:
                out[name] = None
                run.errors.append(f"extras {name}: {type(exc).__name__}: {exc}")
    finally:
        run.group.stop(server)
    return out


def _meta(run: Run, argv: list[str]) -> dict[str, Any]:
    packages = (
        "fastapi",
        "uvicorn",
        "uvloop",
        "httptools",
        "sqlalchemy",
        "asyncpg",
        "aiomysql",
        "asyncmy",
        "dbpool",
    )
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m bench.run " + shlex.join(argv),
        "mode": run.mode.name,
        "duration_s": run.mode.duration_s,
        "warmup_s": run.mode.warmup_s,
        "repeat": run.mode.repeat,
        "pool_size": POOL_SIZE,
        "load_generator": run.generator,
        "pinning": run.cores.describe(),
        "platform": platform.platform(),
        "versions": versions,
    }


def execute(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    mode = _narrowed(MODES["tiny" if args.tiny else "quick" if args.quick else "full"], args)
    # The CI smoke run (tiny) uses wrk when present but never installs anything.
    no_wrk = "--no-wrk given" if args.no_wrk else load.ensure_wrk(install=not args.tiny)
    generator = (
        "wrk -t1 (Lua POST script)"
        if no_wrk is None
        else f"python x{mode.client_procs} processes (fallback: {no_wrk})"
    )
    print(f"bench: load generator: {generator}", file=sys.stderr, flush=True)
    cores = plan_cores()
    if cores.load:
        # The bench itself (extras client, proxy, forked load workers) keeps off the servers' CPU.
        os.sched_setaffinity(0, cores.load)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="dbpool-bench-") as tmp:
        workdir = Path(tmp)
        run = Run(
            mode,
            cores,
            ProcessGroup(workdir, cores.server),
            workdir,
            use_wrk=no_wrk is None,
            generator=generator,
            engines=tuple(args.engines.split(",")) if args.engines else ("postgresql", "mariadb"),
            constant=not args.no_constant,
        )
        extras: dict[str, Any] = {}
        try:
            fixtures.ensure_tables()
            servers = _start_servers(run, with_service=not args.no_service)
            ids = asyncio.run(_register_all(run, servers))
            _throughput(run, servers, ids)
            for name in list(servers):
                run.group.stop(servers[name])
            if not args.no_service and not args.no_extras:
                extras = _extras(run)
        except Exception as exc:
            run.errors.append(f"run aborted: {type(exc).__name__}: {exc}")
        finally:
            run.group.stop_all()
    ratio_rows = report.ratios(run.rows)
    return {
        "meta": _meta(run, argv) | {"elapsed_s": round(time.monotonic() - started, 1)},
        "throughput": run.rows,
        "ratios": ratio_rows,
        "extras": extras,
        "goals": report.goals(ratio_rows, extras, max(mode.concurrency)),
        "errors": run.errors,
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parse(argv)
    result = execute(args, argv)
    print(report.render(result))
    print(f"\n(elapsed {result['meta']['elapsed_s']} s)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
