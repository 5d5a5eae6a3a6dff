"""Profile one ``dbpool serve`` worker under load with py-spy (a developer tool, not part of
the benchmark run): ``python -m bench.profile --case point --engine postgresql --seconds 8``.
Writes ``bench/out/profile-<engine>-<case>.txt`` (py-spy ``--format raw`` collapsed stacks)."""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import httpx

from bench import fixtures, load
from bench.client import register
from bench.procs import ProcessGroup, free_port, plan_cores
from bench.service import baseline_argv, baseline_env, start_service

__all__ = ["main"]

QUERY_PATH = "/api/external-db-connections/{connection_id}/query"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--engine", default="postgresql")
    parser.add_argument("--case", default="point")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--driver", default="")
    parser.add_argument("--no-spy", action="store_true", help="CPU per request only")
    parser.add_argument("--baseline", action="store_true", help="the raw-driver baseline")
    args = parser.parse_args(argv)
    db = fixtures.PG if args.engine == "postgresql" else fixtures.MY
    fixtures.ensure_tables()
    cores = plan_cores()
    out = Path("bench/out")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        group = ProcessGroup(Path(tmp), cores.server)
        extra = {"DBPOOL_MYSQL_DRIVER": args.driver} if args.driver else None
        if args.baseline:
            module = "asyncpg_app" if db is fixtures.PG else "aiomysql_app"
            port = free_port()
            server = group.start("baseline", baseline_argv(module, port),
                                 baseline_env(db, 10), port)
        else:
            server = start_service(group, "service", Path(tmp) / "svc", extra)
        try:
            group.wait_ready(server)
            cid = 0 if args.baseline else asyncio.run(_register(server.url, db))
            case = fixtures.cases_for((args.case,))[0]
            work = load.Workload(QUERY_PATH.format(connection_id=cid), case.bodies)
            target = out / f"profile-{args.engine}-{args.case}.txt"
            spy = threading.Thread(target=_spy, args=(server.proc.pid, args.seconds, target))
            result: list[load.LoadResult] = []
            loader = threading.Thread(target=lambda: result.append(load.run_load(
                server.url, work, concurrency=args.concurrency, duration_s=args.seconds,
                warmup_s=1.0, cores=cores.load, processes=2, use_wrk=False)))
            cpu = _cpu_seconds(server.proc.pid)
            loader.start()
            if not args.no_spy:
                spy.start()
            loader.join()
            if not args.no_spy:
                spy.join()
            used = _cpu_seconds(server.proc.pid) - cpu
            res = result[0]
            total = res.rps * args.seconds  # the measured window only; CPU includes warm-up
            print(f"rps={res.rps:.1f} p99={res.to_dict().get('p99_ms')} "
                  f"cpu/request~{used / max(total, 1) * 1e6:.0f} us (incl. warm-up) -> {target}")
        finally:
            group.stop_all()
    return 0


async def _register(url: str, db: fixtures.DbTarget) -> int:
    async with httpx.AsyncClient(base_url=url, timeout=30.0) as http:
        return await register(http, f"prof-{db.engine}", db, maxConnections=10)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _spy(pid: int, seconds: float, target: Path) -> None:
    spy = Path(sys.executable).with_name("py-spy")
    subprocess.run([str(spy), "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "200",
                    "--format", "raw", "-o", str(target), "--nonblocking"], check=False,
                   capture_output=True)


if __name__ == "__main__":
    raise SystemExit(main())
