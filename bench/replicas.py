"""``python -m bench.replicas [--duration S] [--concurrency 16,64] [--pool N] [--json out.json]``

Read scaling: the same point reads (``SELECT * FROM bench_items WHERE id = $1``) through one
``dbpool serve``, first on a single-node registration of a PostgreSQL primary, then on a
registration of that primary plus its streaming standby with ``auto`` routing (the reads go to
the standby). Both registrations have the same ``maxConnections``, which is a per-node bound:
the cluster may hold twice the connections. The pair comes from ``scripts/replicas.sh``
(ports 15432/15433); it is started if needed and left running.

What it shows on one machine: the routing layer's cost and whether a second node adds
capacity. Both servers share the host's cores with the service and the load generator, so
the figure is a floor for what a replica on its own machine adds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench import fixtures, load
from bench.baselines import QUERY_PATH
from bench.client import register
from bench.procs import ProcessGroup, plan_cores
from bench.service import start_service

__all__ = ["main"]

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "replicas.sh"
PRIMARY = fixtures.DbTarget("postgresql", "127.0.0.1", 15432, "dbpool_test", "dbpool_test",
                            "dbpool-test-pw")
STANDBY_PORT = 15433


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.replicas", description=__doc__)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per window")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--concurrency", default="16,64")
    parser.add_argument("--pool", type=int, default=10, help="maxConnections (per node)")
    parser.add_argument("--json", type=Path)
    return parser.parse_args(argv)


async def _fill_pair() -> None:
    """``bench_items`` on the primary (streamed to the standby), then wait until it is there."""
    conn = await asyncpg.connect(host=PRIMARY.host, port=PRIMARY.port, user="postgres",
                                 database=PRIMARY.database)
    try:
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {fixtures.TABLE} (id integer PRIMARY KEY, name text NOT"
            " NULL, category integer NOT NULL, price double precision NOT NULL, note text NOT"
            f" NULL); GRANT SELECT ON {fixtures.TABLE} TO dbpool_test"
        )
        if await conn.fetchval(f"SELECT count(*) FROM {fixtures.TABLE}") != fixtures.ROWS:
            await conn.execute(f"TRUNCATE {fixtures.TABLE}")
            await conn.copy_records_to_table(
                fixtures.TABLE, records=[fixtures._row(i) for i in range(1, fixtures.ROWS + 1)]
            )
    finally:
        await conn.close()
    standby = await asyncpg.connect(host=PRIMARY.host, port=STANDBY_PORT, user="postgres",
                                    database=PRIMARY.database)
    try:
        for _ in range(100):
            count = await standby.fetchval(
                f"SELECT CASE WHEN to_regclass('{fixtures.TABLE}') IS NULL THEN 0 "
                f"ELSE (SELECT count(*) FROM {fixtures.TABLE}) END"
            )
            if count == fixtures.ROWS:
                return
            await asyncio.sleep(0.1)
        raise RuntimeError("the standby did not receive bench_items within 10 s")
    finally:
        await standby.close()


async def _register(url: str, pool: int) -> dict[str, int]:
    async with httpx.AsyncClient(base_url=url, timeout=30.0) as http:
        return {
            "single node": await register(http, "bench-single", PRIMARY, maxConnections=pool,
                                          options={"ssl": "disable"}),
            "primary + replica": await register(
                http, "bench-cluster", PRIMARY, maxConnections=pool, options={"ssl": "disable"},
                replicas=[{"host": PRIMARY.host, "port": STANDBY_PORT}],
            ),
        }


def execute(args: argparse.Namespace) -> list[dict[str, Any]]:
    subprocess.run(["bash", str(SCRIPT), "start"], check=True, timeout=120)
    asyncio.run(_fill_pair())
    case = fixtures.cases_for(("point",))[0]
    cores = plan_cores()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="dbpool-bench-replicas-") as tmp:
        group = ProcessGroup(Path(tmp), cores.server)
        try:
            server = start_service(group, "service", Path(tmp) / "service")
            group.wait_ready(server)
            ids = asyncio.run(_register(server.url, args.pool))
            for c in (int(v) for v in args.concurrency.split(",")):
                for name, cid in ids.items():  # back to back, so drift hits both alike
                    work = load.Workload(QUERY_PATH.format(connection_id=cid), case.bodies)
                    result = load.run_load(
                        server.url, work, concurrency=c, duration_s=args.duration,
                        warmup_s=args.warmup, cores=cores.load, processes=2,
                        use_wrk=load.ensure_wrk(install=False) is None,
                    )
                    rows.append({"registration": name} | result.to_dict())
                    print(f"  {name:<18} c={c:<3} {result.rps:9.1f} rps  p50 {result.p50_ms} ms"
                          f"  p99 {result.p99_ms} ms  errors {result.errors}", file=sys.stderr,
                          flush=True)
        finally:
            group.stop_all()
    return rows


def render(rows: list[dict[str, Any]]) -> str:
    lines = ["| registration | concurrency | req/s | p50 ms | p99 ms | errors |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['registration']} | {r['concurrency']} | {r['rps']:.0f} | {r['p50_ms']} | "
              f"{r['p99_ms']} | {r['errors']} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    started = time.monotonic()
    rows = execute(args)
    print(render(rows))
    print(f"\n(elapsed {time.monotonic() - started:.1f} s)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 1 if any(r["requests"] == 0 for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
