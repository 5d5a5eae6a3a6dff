"""``python -m bench.soak --minutes N [--json out.json] [--registry postgresql|sqlite]``

A chaos soak against a real ``dbpool serve``: PostgreSQL and MariaDB connections, some
through fault proxies, a mixed load from several client processes (``bench/soak_load.py``),
a chaos schedule (``bench/soak_chaos.py``), the databases' own session counts sampled
throughout (``bench/soak_sample.py``). Afterwards the service is stopped with SIGTERM, the
sessions left and the rows written are checked, the service log is scanned, and a JSON
report with its bars is written (``bench/soak_report.py``). Exit status 1 when a bar is
missed, 2 when the soak itself could not run. Everything the run creates (a login role, a
registry database, MariaDB accounts, tables) is dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import secrets
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.procs import ProcessGroup, Server
from bench.service import start_service
from bench.soak_bars import build_report, summary
from bench.soak_chaos import Chaos, Target, schedule
from bench.soak_load import API, Recorder, client_main
from bench.soak_report import (
    faults_section,
    hangups_section,
    outage_windows,
    requests_section,
    scan_log,
    sessions_section,
    writes_section,
)
from bench.soak_sample import SessionSampler
from bench.soak_setup import ITEMS, SoakDbs
from bench.soak_targets import (
    QUERY_TIMEOUT_S,
    SoakAborted,
    register,
    service_env,
    start_proxies,
    warm_up,
)
from tests.support import dbs
from tests.support.proxy import TcpProxy

__all__ = ["main"]

MY_ACCOUNTS = ("a", "b")
UNKNOWN_ID = 999_999
STRAGGLER_S = 60.0  # clients still running this long after the end are killed
LEFT_AFTER_SHUTDOWN_WAIT_S = 5.0


@dataclass(frozen=True)
class Options:
    seconds: float
    json_path: Path
    registry: str
    clients: int
    concurrency: int
    seed: int


def _start_clients(
    opts: Options, plan: dict[str, Any], workdir: Path
) -> list[tuple[multiprocessing.process.BaseProcess, Path]]:
    ctx = multiprocessing.get_context("spawn")
    started: list[tuple[multiprocessing.process.BaseProcess, Path]] = []
    for proc in range(opts.clients):
        out = workdir / f"client-{proc}.json"
        process = ctx.Process(target=client_main, args=(plan | {"proc": proc}, str(out)))
        process.start()
        started.append((process, out))
    return started


async def _join_clients(
    clients: list[tuple[multiprocessing.process.BaseProcess, Path]], end_at: float
) -> tuple[Recorder, int]:
    for process, _ in clients:
        await asyncio.to_thread(process.join, max(0.0, end_at + STRAGGLER_S - time.time()))
    killed = 0
    merged = Recorder()
    for process, out in clients:
        if process.is_alive():
            process.kill()
            killed += 1
        process.join(5)
        if out.exists():
            part = json.loads(out.read_text())
            merged.requests += part["requests"]
            merged.writes += part["writes"]
            merged.hangups += part["hangups"]
            merged.wrong_results += part["wrong_results"]
    return merged, killed


async def _sessions_after(sampler: SessionSampler) -> dict[str, int]:
    deadline = time.monotonic() + LEFT_AFTER_SHUTDOWN_WAIT_S
    while True:
        counts = await sampler.count_now()
        if sum(counts.values()) == 0 or time.monotonic() > deadline:
            return counts
        await asyncio.sleep(0.25)


def _stop_service(group: ProcessGroup, server: Server) -> dict[str, Any]:
    started = time.monotonic()
    group.stop(server)
    return {"stop_seconds": round(time.monotonic() - started, 2),
            "exit_code": server.proc.returncode}  # fmt: skip


async def _soak(opts: Options, workdir: Path) -> dict[str, Any]:
    soak = SoakDbs(pg_registry=opts.registry == "postgresql")
    group = ProcessGroup(workdir, cores=None)
    proxies: dict[str, TcpProxy] = {}
    try:
        await soak.create(MY_ACCOUNTS)
        proxies = await start_proxies(soak.pg_registry)
        token = secrets.token_urlsafe(24)
        server = start_service(group, "dbpool", workdir / "service",
                               service_env(soak, proxies, token))  # fmt: skip
        await asyncio.to_thread(group.wait_ready, server)
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30) as http:
            return await _run(opts, workdir, soak, group, server, proxies, http, token)
    finally:
        group.stop_all()
        for proxy in proxies.values():
            await proxy.aclose()
        await soak.drop(MY_ACCOUNTS)


async def _run(
    opts: Options, workdir: Path, soak: SoakDbs, group: ProcessGroup, server: Server,
    proxies: dict[str, TcpProxy], http: httpx.AsyncClient, token: str,
) -> dict[str, Any]:  # fmt: skip
    targets, inactive_id = await register(http, soak, proxies)
    await warm_up(http, targets)
    sampler = SessionSampler(
        soak.pg_role,
        {f"dbpool:{t.id}": t.name for t in targets.values() if t.engine == "postgresql"},
        {t.my_user: t.name for t in targets.values() if t.my_user},
        {t.name: t.max_connections for t in targets.values()},
    )
    stop_sampling = asyncio.Event()
    sampling = asyncio.create_task(sampler.run(stop_sampling))
    lock = f"{soak.writes}_wait"
    holder = await asyncio.to_thread(_hold_wait_lock, lock)
    started = time.time() + 1.0
    end_at = started + opts.seconds
    plan = {
        "url": server.url, "host": "127.0.0.1", "port": server.port, "token": token,
        "end_at": end_at, "seed": opts.seed, "concurrency": opts.concurrency,
        "targets": [{"name": t.name, "id": t.id, "engine": t.engine} for t in targets.values()],
        "inactive_id": inactive_id, "unknown_id": UNKNOWN_ID,
        "items": soak.items, "writes": soak.writes, "items_count": ITEMS, "lock": lock,
    }  # fmt: skip
    clients = _start_clients(opts, plan, workdir)
    controller = Recorder()
    chaos = Chaos(http, targets, soak.pg_role, proxies.get("registry"), controller)
    faults = schedule(opts.seconds, registry_faults=soak.pg_registry)
    try:
        await asyncio.wait_for(chaos.run(faults, started), opts.seconds + STRAGGLER_S)
        merged, killed = await _join_clients(clients, end_at)
    finally:
        chaos.restore_all()
        for process, _ in clients:  # an aborted run leaves no client behind
            if process.is_alive():
                process.kill()
        holder.close()  # the server releases the lock with the session
    final_status = (await http.get(f"{API}/pool-status")).json()
    stop_sampling.set()
    await sampling
    shutdown = await asyncio.to_thread(_stop_service, group, server)
    after = await _sessions_after(sampler)
    held = {"postgresql": await soak.written_pg(), "mariadb": soak.written_my()}
    opts.json_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(server.log_path, opts.json_path.with_suffix(".service.log"))
    requests = merged.requests + controller.requests
    sessions = {
        "peak": sampler.peaks,
        "max": {t.name: t.max_connections for t in targets.values()},
        "after_shutdown": after,
        "over_max_samples": sampler.over,
        "over_max_first_reads": sampler.transient_over,
        "samples": sampler.samples,
        "sample_errors": sampler.errors,
    }
    return build_report(
        meta=_meta(opts, targets, killed, merged.wrong_results),
        requests=requests_section(requests),
        writes=writes_section(merged.writes, held),
        hangups=hangups_section(
            merged.hangups, sampler.statements_seen, chaos.records,
            {t.name: t.max_connections for t in targets.values()}, QUERY_TIMEOUT_S,
            sampler.seen_beside,
        ),
        faults=faults_section(chaos.records, requests),
        sessions=sessions_section(sessions, chaos.records),
        shutdown=shutdown,
        final_pool_status=final_status.get("data"),
        log=scan_log(
            server.log_path.read_text(errors="replace"),
            outage_windows(chaos.records, {t.name: t.id for t in targets.values()}),
        ),
    )


def _hold_wait_lock(name: str) -> Any:
    """A root session (not any pool's) holding the lock the soak's long MariaDB statements
    wait for (``soak_load._wait_sql``), for the whole run."""
    holder = dbs.my_admin()
    with holder.cursor() as cursor:
        cursor.execute("SELECT GET_LOCK(%s, 0)", (name,))
        if cursor.fetchone()[0] != 1:
            holder.close()
            raise SoakAborted(f"could not take the MariaDB lock {name}")
    return holder


def _meta(opts: Options, targets: dict[str, Target], killed: int, wrong: int) -> dict[str, Any]:
    return {
        "command": "python -m bench.soak " + shlex.join(sys.argv[1:]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": opts.seconds,
        "registry": opts.registry,
        "client_processes": opts.clients,
        "tasks_per_process": opts.concurrency,
        "seed": opts.seed,
        "targets": {t.name: {"id": t.id, "engine": t.engine, "max": t.max_connections,
                             "proxied": t.proxy is not None} for t in targets.values()},
        "clients_killed_at_end": killed,
        "wrong_results": wrong,
    }  # fmt: skip


def _parse(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, required=True, help="load duration")
    parser.add_argument("--json", type=Path, help="report path (default bench/out/soak-*.json)")
    parser.add_argument("--registry", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--clients", type=int, default=4, help="client processes")
    parser.add_argument("--concurrency", type=int, default=3, help="tasks per client process")
    parser.add_argument("--seed", type=int, default=20261201)
    args = parser.parse_args(argv)
    if not 0.1 <= args.minutes <= 120:
        parser.error("--minutes must be between 0.1 and 120")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    path = args.json or Path("bench/out") / f"soak-{stamp}.json"
    return Options(args.minutes * 60, path, args.registry, args.clients, args.concurrency,
                   args.seed)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    opts = _parse(argv)
    with tempfile.TemporaryDirectory(prefix="dbpool-soak-") as tmp:
        try:
            report = asyncio.run(_soak(opts, Path(tmp)))
        except SoakAborted as exc:
            print(f"soak: could not run: {exc}", file=sys.stderr)
            return 2
    opts.json_path.write_text(json.dumps(report, indent=1, default=str))
    print(summary(report))
    print(f"report: {opts.json_path}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
