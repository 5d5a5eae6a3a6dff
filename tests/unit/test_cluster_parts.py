"""The pure parts of a cluster: reading a server's role and lag answer, summing node
snapshots, deriving per-node configs (the servers themselves: tests/integration/test_replicas_*)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr

from app.domain import ConnectionConfig, DbType, ReplicaNode
from app.pools.roles import RoleReport, probe_role
from app.pools.stats import NodeSnapshot, PoolSnapshot, PoolStats, cluster_snapshot

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def answers(by_sql: dict[str, list[dict[str, Any]] | Exception]) -> Any:
    async def inspect(sql: str) -> Sequence[Mapping[str, Any]] | None:
        answer = next(v for k, v in by_sql.items() if sql.startswith(k))
        if isinstance(answer, Exception):
            raise answer
        return answer
    return inspect


@pytest.mark.parametrize(
    ("row", "report"),
    [
        ({"recovering": False, "lag": 0}, RoleReport("primary", 0.0)),
        ({"recovering": True, "lag": 2.5}, RoleReport("replica", 2.5)),
        ({"recovering": True, "lag": None}, RoleReport("replica", None)),
        ({"recovering": True, "lag": -0.01}, RoleReport("replica", 0.0)),  # clock skew
    ],
)
async def test_postgresql_role_and_lag(row: dict[str, Any], report: RoleReport) -> None:
    assert await probe_role(DbType.POSTGRESQL, answers({"SELECT": [row]})) == report


async def test_mariadb_role_and_lag() -> None:
    primary = answers({"SELECT @@read_only": [{"read_only": 0}]})
    assert await probe_role(DbType.MARIADB, primary) == RoleReport("primary", 0.0)
    behind = answers({"SELECT @@read_only": [{"read_only": 1}],
                      "SHOW SLAVE STATUS": [{"Seconds_Behind_Master": 7}]})
    assert await probe_role(DbType.MARIADB, behind) == RoleReport("replica", 7.0)
    stopped = answers({"SELECT @@read_only": [{"read_only": 1}],
                       "SHOW SLAVE STATUS": [{"Seconds_Behind_Master": None}]})
    assert await probe_role(DbType.MARIADB, stopped) == RoleReport("replica", None)
    no_grant = answers({"SELECT @@read_only": [{"read_only": 1}],
                        "SHOW SLAVE STATUS": PermissionError("denied")})
    assert await probe_role(DbType.MARIADB, no_grant) == RoleReport("replica", None)
    mysql = answers({"SELECT @@read_only": [{"read_only": 1}],
                     "SHOW REPLICA STATUS": [{"Seconds_Behind_Source": 1}]})
    assert await probe_role(DbType.MYSQL, mysql) == RoleReport("replica", 1.0)
    busy = answers({"SELECT": None})  # no free slot to ask on
    assert await probe_role(DbType.MARIADB, busy) is None


def snap(node: str, *, out: int, idle: int, state: Any = "ok", lent: int = 0,
         avg_ms: float = 0.0, used: timedelta = timedelta()) -> PoolSnapshot:
    return PoolSnapshot(
        connection_id=7, connection_name="c", db_type="postgresql", pool_name="dbpool:7",
        checked_out=out, checked_in=idle, max_connections=10, min_connections=1, waiting=1,
        state=state, healthy=state == "ok", last_health_check_at=T0 + used, created_at=T0,
        last_used_at=T0 + used, idle_seconds=5.0 - used.total_seconds(),
        stats=PoolStats(acquisitions=lent, avg_acquire_ms=avg_ms, query_errors=1), node=node,
    )


def node(pool: PoolSnapshot, role: str) -> NodeSnapshot:
    return NodeSnapshot(node=pool.node, role=role, address="h:1", weight=1, lag_seconds=None,
                        probed_at=None, pool=pool)


def test_cluster_figures_are_the_sums_of_its_nodes() -> None:
    nodes = [node(snap("node0", out=2, idle=1, lent=10, avg_ms=1.0), "primary"),
             node(snap("node1", out=1, idle=3, lent=30, avg_ms=3.0,
                       used=timedelta(seconds=2)), "replica")]
    total = cluster_snapshot(nodes, created_at=T0, recreations=0)
    assert (total.checked_out, total.checked_in, total.waiting) == (3, 4, 2)
    assert (total.max_connections, total.min_connections) == (20, 2)
    assert total.stats.acquisitions == 40 and total.stats.avg_acquire_ms == 2.5
    assert total.stats.query_errors == 2
    assert total.last_used_at == T0 + timedelta(seconds=2) and total.idle_seconds == 3.0
    assert total.state == "ok" and total.nodes == tuple(nodes)


@pytest.mark.parametrize(
    ("states", "expected"),
    [(("ok", "ok"), "ok"), (("ok", "circuit_open"), "degraded"),
     (("circuit_open", "circuit_open"), "circuit_open"), (("degraded", "ok"), "degraded")],
)
def test_a_cluster_is_down_only_when_every_node_is(states: tuple[str, str], expected: str) -> None:
    nodes = [node(snap(f"node{i}", out=0, idle=0, state=s), "unknown")
             for i, s in enumerate(states)]
    assert cluster_snapshot(nodes, created_at=T0, recreations=0).state == expected


def test_node_configs_inherit_credentials_unless_given() -> None:
    config = ConnectionConfig(
        id=3, name="n", db_type=DbType.POSTGRESQL, host="db1", port=5432, database="d",
        username="app", password=SecretStr("main-secret"), max_replica_lag_seconds=2,
        replicas=(ReplicaNode(host="db2", port=5433, weight=3),
                  ReplicaNode(host="::1", port=5434, username="ro", password=SecretStr(""))),
    )
    own, second, third = config.nodes()
    assert (own.node, own.address, own.replicas) == ("node0", "db1:5432", ())
    assert (second.node, second.address, second.weight, second.username) == (
        "node1", "db2:5433", 3, "app")
    assert second.password.get_secret_value() == "main-secret"
    # An explicitly empty password is the replica's own, not "use the registration's".
    assert (third.address, third.username, third.password.get_secret_value()) == (
        "[::1]:5434", "ro", "")
    assert all(n.pool_name == "dbpool:3" for n in (own, second, third))
    assert "main-secret" not in repr(config)
