"""A registration with a replica, against real replica pairs (scripts/replicas.sh): reads on
the replica, writes on the primary, fallback, fail-fast writes, lag, and the servers' own counts.

The promotion test lives in ``test_replicas_failover.py``: it rebuilds the pair afterwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.support import replicas as rp
from tests.support.query import Api, query_registry, running_api, unique, wait_until

pytestmark = pytest.mark.usefixtures("replica_pairs")
ENGINES = ["postgresql", "mariadb"]
PORTS = {"postgresql": (rp.PG_PRIMARY, rp.PG_STANDBY), "mariadb": (rp.MY_PRIMARY, rp.MY_REPLICA)}
__all__ = ["query_registry"]
NODES = {"postgresql": ("pg-primary", "pg-standby"), "mariadb": ("my-primary", "my-replica")}


class Pair:
    """One registration over a replica pair, and the servers' own view of it."""

    def __init__(self, api: Api, db_type: str, cid: int, user: str, table: str) -> None:
        self.api, self.db_type, self.cid, self.user, self.table = api, db_type, cid, user, table
        self.primary_port, self.replica_port = PORTS[db_type]

    async def query(self, sql: str, **body: Any) -> dict[str, Any]:
        response = await self.api.query(self.cid, sql, **body)
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()["data"]
        return data

    async def read_node(self, **body: Any) -> str:
        data = await self.query(f"SELECT count(*) AS n FROM {self.table}", **body)
        return str(data["node"]["id"])

    async def sessions(self, port: int) -> int:
        if self.db_type == "postgresql":
            return await rp.pg_sessions(port, f"dbpool:{self.cid}")
        return await rp.my_sessions(port, self.user)

    def nodes(self) -> dict[str, Any]:
        snap = self.api.snapshot(self.cid)
        return {n.node: n for n in snap.nodes}

    async def monitor_round(self) -> None:
        await self.api.app.state.housekeeper.run_once()

    async def replicated(self) -> bool:
        """The table (and the test's account) reached the replica."""
        if self.db_type == "postgresql":
            rows = await rp.pg_fetch(self.replica_port, "SELECT to_regclass($1) IS NOT NULL",
                                     self.table)
            return bool(rows[0][0])
        rows = await rp.my_fetch(self.replica_port, "SELECT count(*) FROM information_schema"
                                 ".TABLES WHERE TABLE_NAME = %s", self.table)
        users = await rp.my_fetch(self.replica_port, "SELECT count(*) FROM mysql.user "
                                  "WHERE User = %s", self.user)
        return bool(rows[0][0]) and bool(users[0][0])


@pytest.fixture
async def api(query_registry: str) -> AsyncIterator[Api]:
    async with running_api(query_registry, shutdown_grace_seconds=1) as running:
        yield running


async def make_pair(api: Api, db_type: str, **overrides: Any) -> Pair:
    primary, replica = PORTS[db_type]
    user = rp.USER
    if db_type == "mariadb":
        user = unique("rq")[:30]
        await rp.my_create_user(user)
    table = unique("rt")
    cid = await api.register(
        db_type, port=primary, database=rp.DATABASE, username=user, password=rp.PASSWORD,
        replicas=[{"host": rp.HOST, "port": replica}], connectionTimeout=3, **overrides,
    )
    pair = Pair(api, db_type, cid, user, table)
    data = await pair.query(f"CREATE TABLE {table} (id int)")
    assert data["node"] == {"id": "node0", "role": "primary"}
    assert await wait_until(pair.replicated, within=10)
    return pair


async def assert_counts_match(pair: Pair) -> None:
    """Every node's pool-status figures are what its server counts (nothing leaked). Polled
    briefly: a node's prober may be in the middle of its connect-and-close just then."""

    async def agree() -> bool:
        for node_id, port in (("node0", pair.primary_port), ("node1", pair.replica_port)):
            node = pair.nodes()[node_id]
            if node.pool.checked_out or await pair.sessions(port) != node.pool.checked_in:
                return False
        return True

    assert await wait_until(agree, within=3), {
        node_id: (snap.pool.checked_out, snap.pool.checked_in)
        for node_id, snap in pair.nodes().items()
    }


@pytest.mark.parametrize("db_type", ENGINES)
async def test_reads_land_on_the_replica_and_writes_on_the_primary(
    api: Api, db_type: str
) -> None:
    pair = await make_pair(api, db_type)
    write = await pair.query(f"INSERT INTO {pair.table} (id) VALUES (1)")
    assert write["node"] == {"id": "node0", "role": "primary"} and write["rowCount"] == 1
    lent = {node: snap.pool.stats.acquisitions for node, snap in pair.nodes().items()}
    for _ in range(3):
        read = await pair.query(f"SELECT id FROM {pair.table} ")
        assert read["node"] == {"id": "node1", "role": "replica"}
    after = {node: snap.pool.stats.acquisitions for node, snap in pair.nodes().items()}
    assert (after["node0"] - lent["node0"], after["node1"] - lent["node1"]) == (0, 3)
    # The replica itself holds the sessions that answered.
    assert await pair.sessions(pair.replica_port) == pair.nodes()["node1"].pool.checked_in >= 1
    # target=primary reads on the primary; the analyser's unknowns go there too.
    assert await pair.read_node(target="primary") == "node0"
    # A read-only transaction may use the replica, and the database holds it to reading.
    tx = await api.transaction(pair.cid, [{"sql": f"SELECT id FROM {pair.table}"}],
                               readOnly=True)
    assert tx.status_code == 200 and tx.json()["data"]["node"]["id"] == "node1", tx.text
    tx = await api.transaction(pair.cid, [{"sql": f"INSERT INTO {pair.table} VALUES (2)"}])
    assert tx.status_code == 200 and tx.json()["data"]["node"]["id"] == "node0", tx.text
    rows = await api.client.get(f"/api/external-db-connections/{pair.cid}/tables/"
                                f"{pair.table}/rows")
    assert rows.status_code == 200 and rows.json()["data"]["node"]["id"] == "node1", rows.text
    await assert_counts_match(pair)


async def test_a_read_only_transaction_refuses_writes_wherever_it_runs(api: Api) -> None:
    pair = await make_pair(api, "postgresql")
    tx = await api.transaction(pair.cid, [{"sql": f"INSERT INTO {pair.table} VALUES (1)"}],
                               readOnly=True)
    assert tx.status_code == 403 and tx.json()["error"]["code"] == "READ_ONLY", tx.text
    await assert_counts_match(pair)


@pytest.mark.parametrize("db_type", ENGINES)
async def test_a_stopped_replica_sends_reads_to_the_primary_and_comes_back(
    api: Api, db_type: str
) -> None:
    pair = await make_pair(api, db_type)
    assert await pair.read_node() == "node1"
    replica_node = NODES[db_type][1]
    await rp.node("stop", replica_node)
    try:
        # The very first read after the stop is answered, by the primary.
        for _ in range(4):
            assert await pair.read_node() == "node0"
        replica = await api.query(pair.cid, f"SELECT id FROM {pair.table}", target="replica")
        assert replica.status_code == 503, replica.text
        assert replica.json()["error"]["code"] == "DB_UNAVAILABLE"
    finally:
        await rp.node("start", replica_node)

    async def replica_back() -> bool:
        return await pair.read_node() == "node1"

    # The replica's breaker lets a probe through within about a second of the restart (its
    # backoff starts at 1 s); from then on it serves the reads again.
    assert await wait_until(replica_back, within=3)
    await assert_counts_match(pair)


@pytest.mark.parametrize("db_type", ENGINES)
async def test_a_stopped_primary_keeps_reads_and_fails_writes_fast(
    api: Api, db_type: str
) -> None:
    pair = await make_pair(api, db_type)
    primary_node = NODES[db_type][0]
    await rp.node("stop", primary_node)
    try:
        assert await pair.read_node() == "node1"
        for _ in range(4):  # refused at once, then the open circuit answers without trying
            write = await api.query(pair.cid, f"INSERT INTO {pair.table} VALUES (3)")
            assert write.status_code == 503, write.text
            error = write.json()["error"]
            assert error["code"] == "DB_UNAVAILABLE" and write.headers["Retry-After"]
            assert rp.PASSWORD not in write.text
        assert await pair.read_node() == "node1"
        status = await api.client.get(f"/api/external-db-connections/{pair.cid}/pool-status")
        nodes = {n["id"]: n for n in status.json()["data"]["nodes"]}
        assert nodes["node0"]["state"] == "circuit_open" and nodes["node1"]["state"] == "ok"
    finally:
        await rp.node("start", primary_node)
    await assert_counts_match(pair)


async def test_a_primary_down_at_the_first_request_is_found_when_it_returns(api: Api) -> None:
    table = unique("rt")
    await rp.pg_fetch(rp.PG_PRIMARY, f"CREATE TABLE {table} (id int)")
    await rp.pg_fetch(rp.PG_PRIMARY, f"GRANT ALL ON {table} TO {rp.USER}")
    await rp.node("stop", "pg-primary")
    try:
        cid = await api.register(
            "postgresql", port=rp.PG_PRIMARY, database=rp.DATABASE, username=rp.USER,
            password=rp.PASSWORD, replicas=[{"host": rp.HOST, "port": rp.PG_STANDBY}],
            connectionTimeout=3,
        )
        write = await api.query(cid, f"INSERT INTO {table} VALUES (1)")
        assert write.status_code == 503, write.text
        assert write.json()["error"]["details"]["roles"] == {"node0": "unknown",
                                                             "node1": "replica"}
        read = await api.query(cid, f"SELECT id FROM {table}")
        assert read.json()["data"]["node"]["id"] == "node1", read.text
    finally:
        await rp.node("start", "pg-primary")

    async def writes() -> bool:
        response = await api.query(cid, f"INSERT INTO {table} VALUES (2)")
        return response.status_code == 200

    # No monitor round needed: a request that finds no primary asks the unknown node again.
    assert await wait_until(writes, within=5)


@pytest.mark.parametrize("db_type", ENGINES)
async def test_a_replica_past_max_lag_is_skipped(api: Api, db_type: str) -> None:
    pair = await make_pair(api, db_type, maxReplicaLagSeconds=0.5)
    await pair.monitor_round()
    assert await pair.read_node() == "node1"
    await _hold_replay(db_type, pause=True)
    try:
        await pair.query(f"INSERT INTO {pair.table} VALUES (4)")  # lag becomes real
        await asyncio.sleep(0.8)
        await pair.monitor_round()
        lag = pair.nodes()["node1"].lag_seconds
        assert lag is None or lag > 0.5, lag
        assert await pair.read_node() == "node0"
    finally:
        await _hold_replay(db_type, pause=False)

    async def caught_up() -> bool:
        await pair.monitor_round()
        return await pair.read_node() == "node1"

    assert await wait_until(caught_up, within=5)
    await assert_counts_match(pair)


async def _hold_replay(db_type: str, *, pause: bool) -> None:
    if db_type == "postgresql":
        verb = "pause" if pause else "resume"
        await rp.pg_fetch(rp.PG_STANDBY, f"SELECT pg_wal_replay_{verb}()")
    else:
        await rp.my_fetch(rp.MY_REPLICA, f"{'STOP' if pause else 'START'} SLAVE SQL_THREAD")


async def test_pool_status_and_metrics_show_each_node(api: Api) -> None:
    pair = await make_pair(api, "postgresql")
    await pair.read_node()
    status = await api.client.get(f"/api/external-db-connections/{pair.cid}/pool-status")
    data = status.json()["data"]
    assert [(n["id"], n["role"], n["host"]) for n in data["nodes"]] == [
        ("node0", "primary", f"{rp.HOST}:{rp.PG_PRIMARY}"),
        ("node1", "replica", f"{rp.HOST}:{rp.PG_STANDBY}"),
    ]
    assert data["openConnections"] == sum(n["openConnections"] for n in data["nodes"])
    assert data["maxConnections"] == 2 * data["nodes"][0]["maxConnections"]
    assert data["nodes"][1]["lagSeconds"] is not None and data["nodes"][1]["lastProbeAt"]
    assert rp.PASSWORD not in status.text
    metrics = (await api.client.get("/metrics")).text
    for node in ("node0", "node1"):
        assert f'connection_id="{pair.cid}",db_type="postgresql",node="{node}"' in metrics
    await assert_counts_match(pair)
