"""Profile one server under load with py-spy (a developer tool, not part of the benchmark
run): ``python -m bench.profile --case point --engine postgresql --seconds 8``.

Starts ``dbpool serve`` with auth on (as ``bench.run`` does; or, with ``--baseline`` /
``--sqlalchemy``, the raw-driver / hand-written SQLAlchemy baseline), drives it with wrk
(``-t1``, the bench's Lua script and bearer header; the Python generator when wrk is missing
or with ``--no-wrk``) from the other core, and inside the measured window samples it with
py-spy (``--rate`` Hz, ``--native`` for C frames) and its CPU. Writes
``bench/out/profile-<server>-<engine>-<case>.txt`` (py-spy ``--format raw`` collapsed stacks)
and prints req/s, CPU per request and the samples by layer (``bench.layers``).
``--no-spy``: CPU per request only.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench import fixtures, layers, load
from bench.client import register
from bench.cpu import CpuProbe
from bench.procs import ProcessGroup, free_port, plan_cores
from bench.service import baseline_argv, baseline_env, raise_id_floor, start_service

__all__ = ["main"]

QUERY_PATH = "/api/external-db-connections/{connection_id}/query"


@dataclass
class _SpyProbe:
    """py-spy on ``pid`` for the measured window, with the server's CPU (``cpu``)."""

    pid: int
    target: Path
    seconds: float
    rate: int
    native: bool
    cpu: CpuProbe
    spy: bool = True
    _proc: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def begin(self) -> None:
        if self.spy:
            argv = [str(Path(sys.executable).with_name("py-spy")), "record", "-p",
                    str(self.pid), "-d", str(max(1, int(self.seconds))), "-r", str(self.rate),
                    "--format", "raw", "-o", str(self.target), "--nonblocking"]
            argv += ["--native"] if self.native else []
            self._proc.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                               stderr=subprocess.DEVNULL))
        self.cpu.begin()

    def end(self) -> None:
        self.cpu.end()
        for proc in self._proc:
            proc.wait(timeout=60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--engine", default="postgresql")
    parser.add_argument("--case", default="point")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rate", type=int, default=500, help="py-spy samples per second")
    parser.add_argument("--native", action="store_true", help="py-spy --native (C frames)")
    parser.add_argument("--driver", default="")
    parser.add_argument("--no-spy", action="store_true", help="CPU per request only")
    parser.add_argument("--no-wrk", action="store_true", help="the Python load generator")
    parser.add_argument("--baseline", action="store_true", help="the raw-driver baseline")
    parser.add_argument("--sqlalchemy", action="store_true",
                        help="the hand-written SQLAlchemy baseline")
    args = parser.parse_args(argv)
    db = fixtures.PG if args.engine == "postgresql" else fixtures.MY
    fixtures.ensure_tables()
    cores = plan_cores()
    use_wrk = not args.no_wrk and load.ensure_wrk(install=False) is None
    out = Path("bench/out")
    out.mkdir(parents=True, exist_ok=True)
    query_key, admin_key = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory() as tmp:
        group = ProcessGroup(Path(tmp), cores.server)
        if args.baseline or args.sqlalchemy:
            name = "sqlalchemy" if args.sqlalchemy else "baseline"
            module = ("sqlalchemy_app" if args.sqlalchemy
                      else "asyncpg_app" if db is fixtures.PG else "aiomysql_app")
            port = free_port()
            server = group.start(name, baseline_argv(module, port), baseline_env(db, 10), port)
        else:
            name = "service"
            extra = {"DBPOOL_API_KEY": query_key, "DBPOOL_ADMIN_API_KEY": admin_key}
            if args.driver:
                extra["DBPOOL_MYSQL_DRIVER"] = args.driver
            server = start_service(group, name, Path(tmp) / "svc", extra)
        try:
            group.wait_ready(server)
            cid = 0
            if name == "service":
                raise_id_floor(Path(tmp) / "svc")
                cid = asyncio.run(_register(server.url, db, admin_key))
            case = fixtures.cases_for((args.case,))[0]
            work = load.Workload(QUERY_PATH.format(connection_id=cid), case.bodies,
                                 (("Authorization", f"Bearer {query_key}"),))
            target = out / f"profile-{name}-{args.engine}-{args.case}.txt"
            cpu = CpuProbe(server.proc.pid, args.engine, db.port)
            probe = _SpyProbe(server.proc.pid, target, args.seconds - 1, args.rate,
                              args.native, cpu, spy=not args.no_spy)
            res = load.run_load(server.url, work, concurrency=args.concurrency,
                                duration_s=args.seconds, warmup_s=2.0, cores=cores.load,
                                processes=2, use_wrk=use_wrk, probe=probe)
            figures = cpu.per_request(res.rps)
            print(f"{name} {args.engine} {args.case} c={args.concurrency} "
                  f"({'wrk' if use_wrk else 'python'}): rps={res.rps:.1f} "
                  f"p99={res.to_dict().get('p99_ms')} ms, CPU per request: server "
                  f"{figures.get('server_cpu_us')} us, database {figures.get('db_cpu_us')} us")
            if not args.no_spy:
                print(f"py-spy stacks -> {target}")
                layers.main([str(target)])
        finally:
            group.stop_all()
    return 0


async def _register(url: str, db: fixtures.DbTarget, admin_key: str) -> int:
    async with httpx.AsyncClient(base_url=url, timeout=30.0,
                                 headers={"Authorization": f"Bearer {admin_key}"}) as http:
        return await register(http, f"prof-{db.engine}", db, maxConnections=10)


if __name__ == "__main__":
    raise SystemExit(main())
