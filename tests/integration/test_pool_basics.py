"""ManagedPool against the real servers: engine set-up, counts that match the database's,
session settings, trimming and filling, health checks, closing.

The helpers at the top are shared by the other ``test_pool_*`` modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import replace
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncConnection

from app.domain import ConnectionConfig, DbType
from app.errors import ConnectionNotFound, DbAuthFailed, DbUnavailable, ReadOnlyViolation
from app.pools.engine_factory import connect_args, engine_url
from app.pools.managed_pool import ManagedPool
from app.pools.translate import translate_error
from app.settings import Settings
from tests.support import dbs

pytestmark = [pytest.mark.postgresql, pytest.mark.mariadb]

ENGINES = ["postgresql", "mysql", "mariadb"]


def new_id() -> int:
    return 100000 + secrets.randbelow(900000)


def pg_config(**overrides: Any) -> ConnectionConfig:
    base = ConnectionConfig(
        id=new_id(), name=f"pg-{secrets.token_hex(4)}", db_type=DbType.POSTGRESQL,
        host=dbs.PG_HOST, port=dbs.PG_PORT, database=dbs.PG_DATABASE, username=dbs.PG_USER,
        password=SecretStr(dbs.PG_PASSWORD), max_connections=5, connection_timeout=5,
        query_timeout=10,
    )
    return replace(base, **overrides)


def my_config(db_type: DbType, user: str, password: str, **overrides: Any) -> ConnectionConfig:
    base = ConnectionConfig(
        id=new_id(), name=f"my-{secrets.token_hex(4)}", db_type=db_type,
        host=dbs.MY_HOST, port=dbs.MY_PORT, database=dbs.MY_DATABASE, username=user,
        password=SecretStr(password), max_connections=5, connection_timeout=5, query_timeout=10,
    )
    return replace(base, **overrides)


class Target:
    """One database to test against: builds configs and counts connections as the DB sees them."""

    def __init__(self, kind: str, user: str = "", password: str = "") -> None:
        self.kind = kind
        self.user = user
        self.password = password

    @property
    def is_pg(self) -> bool:
        return self.kind == "postgresql"

    def config(self, **overrides: Any) -> ConnectionConfig:
        if self.is_pg:
            return pg_config(**overrides)
        return my_config(DbType(self.kind), self.user, self.password, **overrides)

    async def count(self, config: ConnectionConfig) -> int:
        if self.is_pg:
            return await dbs.pg_count(config.pool_name)
        return await asyncio.to_thread(dbs.my_count, config.username)


def mysql_user(max_user_connections: int = 0) -> Iterator[tuple[str, str]]:
    name = f"dbp_{secrets.token_hex(5)}"
    password = secrets.token_urlsafe(12)
    dbs.create_mysql_user(name, password, max_user_connections=max_user_connections)
    try:
        yield name, password
    finally:
        dbs.drop_mysql_user(name)


def make_target(kind: str, max_user_connections: int = 0) -> Iterator[Target]:
    """A ``Target`` for ``kind``; MariaDB ones get a throwaway user, dropped afterwards."""
    if kind == "postgresql":
        yield Target(kind)
        return
    for user, password in mysql_user(max_user_connections):
        yield Target(kind, user, password)


@pytest.fixture(params=ENGINES)
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    yield from make_target(request.param)


@pytest.fixture
def settings() -> Settings:
    return Settings(max_waiting_per_pool=100)


@pytest.fixture
async def pools() -> AsyncIterator[list[ManagedPool]]:
    """Pools a test builds; all closed at the end, whatever happened."""
    made: list[ManagedPool] = []
    yield made
    for pool in made:
        await pool.aclose(1.0)


async def wait_for_count(target: Target, config: ConnectionConfig, expected: int) -> int:
    """The database's count, polled until it equals ``expected`` (closing is asynchronous)."""
    count = -1
    for _ in range(100):
        count = await target.count(config)
        if count == expected:
            break
        await asyncio.sleep(0.05)
    return count


async def scalar(conn: AsyncConnection, sql: str) -> Any:
    result = await conn.exec_driver_sql(sql)
    return result.scalar()


class DictResolver:
    """A ``ConfigResolver`` over a dict, counting resolve calls."""

    def __init__(self, configs: Mapping[int, ConnectionConfig] | None = None) -> None:
        self.configs: dict[int, ConnectionConfig] = dict(configs or {})
        self.calls = 0

    async def resolve(self, connection_id: int) -> ConnectionConfig:
        self.calls += 1
        await asyncio.sleep(0.01)  # a registry round trip
        try:
            return self.configs[connection_id]
        except KeyError:
            raise ConnectionNotFound(f"no connection {connection_id}") from None

    async def config_versions(self) -> Mapping[int, int]:
        return {cid: c.config_version for cid, c in self.configs.items()}


# -- the engine factory ---------------------------------------------------------------


def test_url_and_repr_never_show_the_password(settings: Settings) -> None:
    config = pg_config(password=SecretStr("s3cret-pw"))
    url = engine_url(config, settings)
    assert "s3cret-pw" not in repr(url) and "s3cret-pw" not in str(url)
    assert "s3cret-pw" not in repr(config)


def test_postgres_connect_args_are_explicit() -> None:
    config = pg_config(password=SecretStr(""), read_only=True, query_timeout=2.5)
    args = connect_args(config)
    assert args["password"] == ""  # explicit: never PGPASSWORD / ~/.pgpass
    assert args["user"] == dbs.PG_USER and args["database"] == dbs.PG_DATABASE
    assert args["server_settings"] == {
        "application_name": config.pool_name,
        "statement_timeout": "2500",
        "default_transaction_read_only": "on",
    }


def test_mysql_connect_args() -> None:
    args = connect_args(my_config(DbType.MARIADB, "u", "p", connection_timeout=3))
    assert args["local_infile"] is False and args["charset"] == "utf8mb4"
    assert args["connect_timeout"] == 3


def test_asyncmy_driver_is_selectable() -> None:
    config = my_config(DbType.MYSQL, "u", "p")
    url = engine_url(config, Settings(mysql_driver="asyncmy"))
    assert url.drivername == "mysql+asyncmy"


async def test_pg_env_and_pgpass_are_not_consulted(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, settings: Settings, pools: list[ManagedPool]
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    pgpass = home / ".pgpass"
    pgpass.write_text("*:*:*:*:pgpass-password\n")
    pgpass.chmod(0o600)
    monkeypatch.setenv("HOME", str(home))
    for var, value in {"PGPASSWORD": "env-password", "PGUSER": "postgres",
                       "PGDATABASE": "postgres", "PGSERVICE": "nope"}.items():
        monkeypatch.setenv(var, value)
    pool = ManagedPool(pg_config(password=SecretStr("")), settings)
    pools.append(pool)
    async with pool.connection() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        assert raw is not None
        params = raw._params
        assert (params.user, params.password, params.database) == (
            dbs.PG_USER, "", dbs.PG_DATABASE)
        assert await scalar(conn, "SELECT current_user") == dbs.PG_USER


# -- acquiring, counting --------------------------------------------------------------


async def test_acquire_counts_match_the_database(
    target: Target, settings: Settings, pools: list[ManagedPool]
) -> None:
    config = target.config(max_connections=3)
    pool = ManagedPool(config, settings)
    pools.append(pool)
    async with pool.connection() as a, pool.connection() as b:
        assert await scalar(a, "SELECT 1") == 1
        assert await scalar(b, "SELECT 2") == 2
        snap = pool.snapshot()
        assert (snap.checked_out, snap.checked_in) == (2, 0)
        assert await target.count(config) == 2
        assert "open=2, active=2, idle=0, waiting=0" in repr(pool)
    snap = pool.snapshot()
    assert (snap.checked_out, snap.checked_in, snap.open) == (0, 2, 2)
    assert await target.count(config) == snap.open
    assert snap.stats.acquisitions == 2
    assert snap.state == "ok" and snap.connection_id == config.id
    await pool.aclose(1.0)
    assert await wait_for_count(target, config, 0) == 0
    assert pool.snapshot().open == 0


async def test_full_queue_and_timeout_are_pool_exhausted(
    target: Target, pools: list[ManagedPool]
) -> None:
    from app.errors import PoolExhausted

    config = target.config(max_connections=1, connection_timeout=0.3)
    pool = ManagedPool(config, Settings(max_waiting_per_pool=1))
    pools.append(pool)
    async with pool.connection():
        waiter = asyncio.create_task(pool.connection().__aenter__())
        await asyncio.sleep(0.05)
        with pytest.raises(PoolExhausted) as full:
            async with pool.connection():
                pass
        assert "waiting" in full.value.message
        with pytest.raises(PoolExhausted) as timed_out:
            await waiter
    assert timed_out.value.message == (
        "no connection within 0.3 s (open=1, active=1, idle=0, waiting=0)"
    )
    assert timed_out.value.retry_after
    assert pool.snapshot().stats.acquire_timeouts == 2


async def test_read_only_and_statement_timeout_are_session_settings(
    target: Target, settings: Settings, pools: list[ManagedPool]
) -> None:
    config = target.config(read_only=True, query_timeout=7)
    pool = ManagedPool(config, settings)
    pools.append(pool)
    table = f"ro_{secrets.token_hex(4)}"
    async with pool.connection() as conn:
        if target.is_pg:
            assert await scalar(conn, "SHOW statement_timeout") == "7s"
            assert await scalar(conn, "SHOW application_name") == config.pool_name
        elif target.kind == "mariadb" or target.kind == "mysql":
            # The server here is MariaDB whatever the registered type: detected, not assumed.
            assert float(await scalar(conn, "SELECT @@max_statement_time")) == 7.0
        with pytest.raises(Exception) as info:
            await conn.exec_driver_sql(f"CREATE TABLE {table} (x int)")
        assert isinstance(translate_error(info.value, config.db_type), ReadOnlyViolation)


async def test_wrong_mariadb_password_is_auth_failed(
    settings: Settings, pools: list[ManagedPool], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    for user, _ in mysql_user():
        config = my_config(DbType.MARIADB, user, "wrong-password")
        pool = ManagedPool(config, settings)
        pools.append(pool)
        with pytest.raises(DbAuthFailed) as info:
            async with pool.connection():
                pass
        assert "wrong-password" not in str(info.value) and "wrong-password" not in repr(
            info.value.details)
        assert pool.snapshot().open == 0 and pool.snapshot().checked_out == 0
        assert "wrong-password" not in caplog.text and "wrong-password" not in repr(pool)


async def test_closed_port_is_unavailable_within_connection_timeout(
    settings: Settings, pools: list[ManagedPool]
) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connections are refused
        for config in (pg_config(port=port, connection_timeout=2),
                       my_config(DbType.MYSQL, "x", "y", port=port, connection_timeout=2)):
            pool = ManagedPool(config, settings)
            pools.append(pool)
            started = asyncio.get_running_loop().time()
            with pytest.raises(DbUnavailable):
                async with pool.connection():
                    pass
            assert asyncio.get_running_loop().time() - started < 2.5
            assert pool.snapshot().checked_out == 0 and pool._gate.in_use == 0


# -- housekeeping ---------------------------------------------------------------------


async def test_trim_idle_closes_surplus_and_keeps_the_minimum(
    target: Target, settings: Settings, pools: list[ManagedPool]
) -> None:
    config = target.config(max_connections=5, min_connections=2)
    pool = ManagedPool(config, settings)
    pools.append(pool)
    async with contextlib.AsyncExitStack() as stack:  # four at once: four connections
        for _ in range(4):
            await stack.enter_async_context(pool.connection())
    assert await target.count(config) == 4
    assert await pool.trim_idle(60) == 0  # nobody idle that long
    async with pool.connection():  # in use: never trimmed
        await asyncio.sleep(0.2)
        assert await pool.trim_idle(0.1) == 2  # 4 open, keep min 2 -> 2 closed
    assert await wait_for_count(target, config, 2) == 2
    assert pool.snapshot().open == 2
    async with pool.connection() as conn:  # the survivors still work
        assert await scalar(conn, "SELECT 1") == 1


async def test_fill_min_opens_up_to_the_minimum(
    target: Target, settings: Settings, pools: list[ManagedPool]
) -> None:
    config = target.config(max_connections=4, min_connections=3)
    pool = ManagedPool(config, settings)
    pools.append(pool)
    assert await pool.fill_min() == 3
    assert await pool.fill_min() == 0
    assert await target.count(config) == 3
    snap = pool.snapshot()
    assert (snap.open, snap.checked_in, snap.stats.acquisitions) == (3, 3, 0)
    async with pool.connection() as conn:
        assert await scalar(conn, "SELECT 1") == 1
    assert await target.count(config) == 3


async def test_health_check_is_a_round_trip_not_a_use(
    target: Target, settings: Settings, pools: list[ManagedPool]
) -> None:
    config = target.config()
    pool = ManagedPool(config, settings)
    pools.append(pool)
    before = pool.snapshot().last_used_at
    assert await pool.health_check() is True
    snap = pool.snapshot()
    assert snap.healthy and snap.last_health_check_at is not None
    assert snap.last_used_at == before and snap.stats.acquisitions == 0
    assert pool.is_idle(0) and not pool.is_idle(3600)


async def test_health_check_failure_marks_degraded(
    settings: Settings, pools: list[ManagedPool]
) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        pool = ManagedPool(pg_config(port=sock.getsockname()[1], connection_timeout=1), settings)
        pools.append(pool)
        assert await pool.health_check() is False
        snap = pool.snapshot()
        # Nothing listens: the database is unreachable, so the circuit opens and a probe
        # follows it (a rebuild could not help).
        assert (snap.state, snap.healthy) == ("circuit_open", False)
        assert snap.last_probe_error == "DB_UNAVAILABLE" and snap.next_probe_at is not None
        assert snap.stats.connect_errors == 1
