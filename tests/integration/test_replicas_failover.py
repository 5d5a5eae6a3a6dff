"""Promoting the standby (``pg_ctl promote``) makes it the write target within one monitor
round, with no registry change. The pair cannot go back as it was: it is rebuilt afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support import replicas as rp
from tests.support.query import Api, query_registry, running_api, unique, wait_until

pytestmark = pytest.mark.usefixtures("replica_pairs")
__all__ = ["query_registry"]


@pytest.fixture
async def api(query_registry: str) -> AsyncIterator[Api]:
    async with running_api(query_registry, shutdown_grace_seconds=1) as running:
        yield running


async def test_a_promoted_standby_becomes_the_write_target(api: Api) -> None:
    table = unique("ft")
    cid = await api.register(
        "postgresql", port=rp.PG_PRIMARY, database=rp.DATABASE, username=rp.USER,
        password=rp.PASSWORD, replicas=[{"host": rp.HOST, "port": rp.PG_STANDBY}],
        connectionTimeout=3,
    )

    async def node_of(sql: str) -> str:
        response = await api.query(cid, sql)
        assert response.status_code == 200, response.text
        return str(response.json()["data"]["node"]["id"])

    async def replicated() -> bool:
        rows = await rp.pg_fetch(rp.PG_STANDBY, "SELECT to_regclass($1) IS NOT NULL", table)
        return bool(rows[0][0])

    assert await node_of(f"CREATE TABLE {table} (id int)") == "node0"
    assert await wait_until(replicated, within=10)
    assert await node_of(f"SELECT id FROM {table}") == "node1"
    before = (await api.client.get(f"/api/external-db-connections/{cid}")).json()["data"]
    try:
        # The old primary keeps running (split brain): the newest promotion takes the writes.
        await rp.promote()
        await api.app.state.housekeeper.run_once()  # one monitor round
        assert await node_of(f"INSERT INTO {table} VALUES (1)") == "node1"
        roles = {n.node: n.role for n in api.snapshot(cid).nodes}
        assert roles == {"node0": "primary", "node1": "primary"}
        rows = await rp.pg_fetch(rp.PG_STANDBY, f"SELECT count(*) FROM {table}")
        assert rows[0][0] == 1  # the write is on the promoted node itself
        # With no replica left, reads fall back to the write target.
        assert await node_of(f"SELECT id FROM {table}") == "node1"
    finally:
        await rp.restore()
    after = (await api.client.get(f"/api/external-db-connections/{cid}")).json()["data"]
    assert after["configVersion"] == before["configVersion"]  # no registry change


async def test_after_a_real_failover_the_next_writes_find_the_new_primary(api: Api) -> None:
    """The primary dies, the standby is promoted: no monitor round runs, yet a write that
    finds the primary unreachable has every node asked again, and writes resume on node1."""
    table = unique("ft")
    cid = await api.register(
        "postgresql", port=rp.PG_PRIMARY, database=rp.DATABASE, username=rp.USER,
        password=rp.PASSWORD, replicas=[{"host": rp.HOST, "port": rp.PG_STANDBY}],
        connectionTimeout=3,
    )
    first = await api.query(cid, f"CREATE TABLE {table} (id int)")
    assert first.status_code == 200, first.text

    async def replicated() -> bool:
        rows = await rp.pg_fetch(rp.PG_STANDBY, "SELECT to_regclass($1) IS NOT NULL", table)
        return bool(rows[0][0])

    assert await wait_until(replicated, within=10)
    try:
        await rp.node("stop", "pg-primary")
        await rp.promote()
        failed = await api.query(cid, f"INSERT INTO {table} VALUES (1)")
        assert failed.status_code == 503, failed.text  # fails fast; the nodes are re-asked

        async def writes_on_node1() -> bool:
            response = await api.query(cid, f"INSERT INTO {table} VALUES (2)")
            return response.status_code == 200 and (
                response.json()["data"]["node"] == {"id": "node1", "role": "primary"})

        assert await wait_until(writes_on_node1, within=5)
        assert api.app.state.housekeeper.rounds == 0  # no monitor round was needed
    finally:
        await rp.restore()


async def test_a_mariadb_replica_made_writable_becomes_the_write_target(api: Api) -> None:
    """MariaDB's role is ``@@read_only``: a replica promoted by hand (replication stopped,
    read_only off) takes the writes after one monitor round, with no registry change."""
    table = unique("ft")
    cid = await api.register(
        "mariadb", port=rp.MY_PRIMARY, database=rp.DATABASE, username=rp.USER,
        password=rp.PASSWORD, replicas=[{"host": rp.HOST, "port": rp.MY_REPLICA}],
        connectionTimeout=3,
    )
    created = await api.query(cid, f"CREATE TABLE {table} (id int)")
    assert created.json()["data"]["node"]["id"] == "node0", created.text

    async def replicated() -> bool:
        rows = await rp.my_fetch(rp.MY_REPLICA, "SELECT count(*) FROM information_schema.TABLES"
                                 " WHERE TABLE_NAME = %s", table)
        return bool(rows[0][0])

    assert await wait_until(replicated, within=10)
    try:
        await rp.my_fetch(rp.MY_REPLICA, "STOP SLAVE")
        await rp.my_fetch(rp.MY_REPLICA, "SET GLOBAL read_only = 0")
        await api.app.state.housekeeper.run_once()
        write = await api.query(cid, f"INSERT INTO {table} VALUES (1)")
        assert write.json()["data"]["node"] == {"id": "node1", "role": "primary"}, write.text
        rows = await rp.my_fetch(rp.MY_REPLICA, f"SELECT count(*) FROM {rp.DATABASE}.{table}")
        assert rows[0][0] == 1
    finally:
        await rp.restore()  # the replica diverged: the pair is rebuilt
