"""The bench's load generators and CPU probe against real servers (no timing asserted).

Every generator that can run here (the Python client always, wrk when on PATH) sends the
bench's bodies and headers correctly and counts failed responses; the CPU probe finds
exactly the PostgreSQL backends of one server's own connections.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import asyncpg
import pytest

from bench import fixtures, load
from bench.baselines import QUERY_PATH
from bench.cpu import CpuProbe
from bench.procs import ProcessGroup, Server, free_port
from bench.service import baseline_argv, baseline_env

pytestmark = [pytest.mark.postgresql, pytest.mark.slow]

GENERATORS = [False] + ([True] if shutil.which("wrk") else [])
HEADERS = (("Authorization", "Bearer not-checked-by-the-baselines"),)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    fixtures.ensure_tables()
    group = ProcessGroup(tmp_path_factory.mktemp("bench-load"), None)
    try:
        out = {}
        for name, module, db in (
            ("constant", "constant_app", None),
            ("asyncpg", "asyncpg_app", fixtures.PG),
        ):
            port = free_port()
            out[name] = group.start(name, baseline_argv(module, port), baseline_env(db, 10), port)
        for server in out.values():
            group.wait_ready(server)
        yield out
    finally:
        group.stop_all()


def _run(
    server: Server, work: load.Workload, use_wrk: bool, probe: CpuProbe | None = None
) -> load.LoadResult:
    return load.run_load(
        server.url, work, concurrency=4, duration_s=1.0, warmup_s=0.0, cores=None,
        processes=1, use_wrk=use_wrk, probe=probe,
    )  # fmt: skip


@pytest.mark.parametrize("use_wrk", GENERATORS, ids=lambda w: "wrk" if w else "python")
def test_bodies_of_every_length_and_the_header_are_sent(
    servers: dict[str, Server], use_wrk: bool
) -> None:
    # Bodies of different lengths: a stale Content-Length would break the next request.
    bodies = fixtures.cases_for(("point",))[0].bodies
    assert len({len(b) for b in bodies}) > 1
    work = load.Workload(QUERY_PATH.format(connection_id=0), bodies, HEADERS)
    result = _run(servers["asyncpg"], work, use_wrk)
    assert result.generator == ("wrk" if use_wrk else "python")
    assert result.requests > 0 and result.errors == 0, result


@pytest.mark.parametrize("use_wrk", GENERATORS, ids=lambda w: "wrk" if w else "python")
def test_non_2xx_responses_are_counted_as_errors(
    servers: dict[str, Server], use_wrk: bool
) -> None:
    work = load.Workload("/no/such/route", (b'{"sql": "SELECT 1"}',), HEADERS)
    result = _run(servers["constant"], work, use_wrk)
    assert result.requests == 0
    assert result.errors > 0


async def _backends(pids: list[int]) -> list[str]:
    db = fixtures.PG
    conn = await asyncpg.connect(
        host=db.host, port=db.port, database=db.database, user=db.user, password=db.password
    )
    try:
        rows = await conn.fetch(
            "SELECT application_name FROM pg_stat_activity WHERE pid = ANY($1::int[])", pids
        )
        return [r["application_name"] for r in rows]
    finally:
        await conn.close()


async def test_probe_counts_exactly_the_servers_backends(servers: dict[str, Server]) -> None:
    server = servers["asyncpg"]
    probe = CpuProbe(server.proc.pid, "postgresql", fixtures.PG.port)
    bodies = fixtures.cases_for(("point",))[0].bodies
    work = load.Workload(QUERY_PATH.format(connection_id=0), bodies)
    result = _run(server, work, use_wrk=False, probe=probe)
    # The asyncpg baseline opens its whole pool (10) at start; nothing else is counted.
    assert sorted(await _backends(probe.db_pids)) == ["bench-asyncpg"] * 10
    figures = probe.per_request(result.rps)
    assert figures["server_cpu_us"] > 0
    assert figures["db_cpu_us"] is not None
    assert figures["db_cpu_scope"].startswith("10 backends")
