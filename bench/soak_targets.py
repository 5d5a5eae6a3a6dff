"""The soak's connections: what is registered, through which proxy, under which account,
and the service's environment."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from bench.soak_chaos import Target
from bench.soak_load import API
from bench.soak_setup import SoakDbs
from tests.support import dbs
from tests.support.proxy import TcpProxy

__all__ = ["QUERY_TIMEOUT_S", "TARGETS", "SoakAborted", "TargetSpec", "register", "service_env",
           "start_proxies", "warm_up"]  # fmt: skip


@dataclass(frozen=True)
class TargetSpec:
    name: str
    engine: str
    max_connections: int
    proxied: bool
    account: str | None = None  # MariaDB account suffix


TARGETS = (
    TargetSpec("pg-direct", "postgresql", 4, proxied=False),
    TargetSpec("pg-cut", "postgresql", 3, proxied=True),
    TargetSpec("pg-flaky", "postgresql", 3, proxied=True),
    TargetSpec("my-direct", "mariadb", 4, proxied=False, account="a"),
    TargetSpec("my-flaky", "mariadb", 3, proxied=True, account="b"),
)


QUERY_TIMEOUT_S = 5.0  # every soak connection's queryTimeout (the server's own limit)


class SoakAborted(RuntimeError):
    """The soak could not be set up (not a bar missed)."""


async def start_proxies(want_registry: bool) -> dict[str, TcpProxy]:
    proxies: dict[str, TcpProxy] = {}
    for spec in TARGETS:
        if spec.proxied:
            port = dbs.PG_PORT if spec.engine == "postgresql" else dbs.MY_PORT
            proxies[spec.name] = TcpProxy("127.0.0.1", port)
    if want_registry:
        proxies["registry"] = TcpProxy(dbs.PG_HOST, dbs.PG_PORT)
    for proxy in proxies.values():
        await proxy.start()
    return proxies


def service_env(soak: SoakDbs, proxies: dict[str, TcpProxy], token: str) -> dict[str, str]:
    env = {
        "DBPOOL_ADMIN_API_KEY": token,
        "DBPOOL_ALLOWED_HOSTS": "127.0.0.1",
        "DBPOOL_LOG_LEVEL": "INFO",
        "DBPOOL_HEALTH_CHECK_INTERVAL_SECONDS": "2",
        "DBPOOL_SHUTDOWN_GRACE_SECONDS": "5",
    }
    if "registry" in proxies:
        env["DBPOOL_REGISTRY_URL"] = (
            f"postgresql+asyncpg://{soak.pg_role}:{soak.password}@127.0.0.1:"
            f"{proxies['registry'].port}/{soak.registry_database}"
        )
    return env


async def register(
    http: httpx.AsyncClient, soak: SoakDbs, proxies: dict[str, TcpProxy]
) -> tuple[dict[str, Target], int]:
    targets: dict[str, Target] = {}
    common = {"host": "127.0.0.1", "database": dbs.PG_DATABASE, "password": soak.password,
              "connectionTimeout": 3, "queryTimeout": QUERY_TIMEOUT_S}  # fmt: skip
    for spec in TARGETS:
        proxy = proxies.get(spec.name)
        direct = dbs.PG_PORT if spec.engine == "postgresql" else dbs.MY_PORT
        user = soak.my_user(spec.account) if spec.account else soak.pg_role
        body = common | {"name": spec.name, "dbType": spec.engine, "username": user,
                         "port": proxy.port if proxy else direct,
                         "maxConnections": spec.max_connections}  # fmt: skip
        response = await http.post(API, json=body)
        if response.status_code != 201:
            raise SoakAborted(f"register {spec.name}: {response.status_code} {response.text}")
        targets[spec.name] = Target(
            spec.name, int(response.json()["data"]["id"]), spec.engine, spec.max_connections,
            proxy=proxy, my_user=user if spec.account else None,
        )  # fmt: skip
    inactive = common | {"name": "inactive", "dbType": "postgresql", "port": dbs.PG_PORT,
                         "username": soak.pg_role, "isActive": False}  # fmt: skip
    response = await http.post(API, json=inactive)
    if response.status_code != 201:
        raise SoakAborted(f"register inactive: {response.status_code} {response.text}")
    return targets, int(response.json()["data"]["id"])


async def warm_up(http: httpx.AsyncClient, targets: dict[str, Target]) -> None:
    for target in targets.values():
        response = await http.post(f"{API}/{target.id}/query", json={"sql": "SELECT 1 AS one"})
        if response.status_code != 200:
            raise SoakAborted(f"warm-up {target.name}: {response.status_code} {response.text}")
