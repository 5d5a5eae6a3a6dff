"""The pool path alone, no HTTP (a developer tool): ``python -m bench.inproc --engine
postgresql --case point --seconds 3``. 64 tasks share one ``ManagedPool`` (10 connections)
in this process, pinned to the last CPU; prints req/s of ``pool.run(run_query)``, the CPU
this process spends per request and, on PostgreSQL, the CPU its backends spend per request
(the backends at the other end of this process's connections, ``bench.cpu``)."""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time

import psutil
from pydantic import SecretStr

from app.domain import ConnectionConfig, DbType
from app.pools.managed_pool import ManagedPool
from app.pools.query import run_query
from app.settings import Settings
from bench import fixtures
from bench.cpu import _backend_pids, _cpu_s
from bench.procs import pin, plan_cores

__all__ = ["main"]


def _db_cpu_s(pids: list[int]) -> float:
    return sum(_cpu_s(psutil.Process(pid)) for pid in pids)


async def _drive(engine: str, case: str, seconds: float, tasks: int
                 ) -> tuple[float, float, float | None]:
    db = fixtures.PG if engine == "postgresql" else fixtures.MY
    config = ConnectionConfig(
        id=random.randint(100000, 999999), name="inproc",
        db_type=DbType.POSTGRESQL if engine == "postgresql" else DbType.MARIADB,
        host=db.host, port=db.port, database=db.database, username=db.user,
        password=SecretStr(db.password), max_connections=10,
    )
    ph = db.placeholder
    sql = {"point": f"SELECT * FROM {fixtures.TABLE} WHERE id = {ph}",
           "rows100": f"SELECT * FROM {fixtures.TABLE} WHERE id >= {ph} ORDER BY id LIMIT 100",
           "select1": "SELECT 1"}[case]
    params = [] if case == "select1" else None
    pool = ManagedPool(config, Settings())
    done = 0
    deadline = 0.0

    async def worker() -> None:
        nonlocal done
        rng = random.Random()
        while time.monotonic() < deadline:
            args = params if params is not None else [rng.randint(1, 9_000)]
            await pool.run(lambda conn, a=args: run_query(conn, config, sql, a, max_rows=1000))
            done += 1

    try:
        deadline = time.monotonic() + 0.5  # warm-up
        await asyncio.gather(*(worker() for _ in range(tasks)))
        done = 0
        pids = _backend_pids(os.getpid(), db.port) if engine == "postgresql" else []
        started, cpu, db_cpu = time.monotonic(), time.process_time(), _db_cpu_s(pids)
        deadline = started + seconds
        await asyncio.gather(*(worker() for _ in range(tasks)))
        # CPU per request is the steadier figure on a shared machine.
        db_us = (_db_cpu_s(pids) - db_cpu) / done * 1e6 if pids else None
        return (done / (time.monotonic() - started), (time.process_time() - cpu) / done * 1e6,
                db_us)
    finally:
        await pool.aclose(1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--engine", default="postgresql")
    parser.add_argument("--case", default="point")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--tasks", type=int, default=64)
    args = parser.parse_args(argv)
    pin(os.getpid(), plan_cores().server)
    import uvloop

    rps, cpu_us, db_us = uvloop.run(_drive(args.engine, args.case, args.seconds, args.tasks))
    db = "" if db_us is None else f", backends {db_us:.0f} us CPU per request"
    print(f"{args.engine} {args.case}: {rps:.0f} req/s, {cpu_us:.0f} us CPU per request{db}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
