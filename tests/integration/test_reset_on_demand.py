"""Reset on demand (app.pools.session_state): a plain read goes back to the pool with no
round trip, anything that could change the session is reset, and nothing reaches the next
request.

Every pool has max_connections=1 and runs through a TCP proxy that counts the bytes the
client sends the server: the bytes sent between a request's last answer and the end of
its return are the reset. Each leak case checks the server's session id (backend pid /
thread id, read from the driver without a round trip) so the next request provably runs
on the very session the first one dirtied. Requests go through the query runner
(``run_query`` / ``run_transaction``), the path every caller's SQL takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from app.errors import DbPoolError, QueryError, QueryTimeout
from app.pools.drivers import adapter_of
from app.pools.managed_pool import ManagedPool
from app.pools.query import Statement, run_query, run_transaction
from app.settings import Settings
from app.sql import analyse
from tests.integration.test_pool_basics import ENGINES, Target, make_target
from tests.support import dbs
from tests.support.proxy import TcpProxy
from tests.support.seam import fast_path, reuses_sessions

pytestmark = [pytest.mark.postgresql, pytest.mark.mariadb]

_SETTLE = 0.05  # seconds for bytes in flight to pass the proxy


@dataclass
class Wire:
    """A pool of one connection behind a byte-counting proxy."""

    pool: ManagedPool
    proxy: TcpProxy
    target: Target

    @property
    def pg(self) -> bool:
        return self.target.is_pg

    @property
    def tracks(self) -> bool:
        """The driver can tell a clean session (every path but the MySQL public one)."""
        return self.pg or fast_path(self.pool.config.db_type)


@dataclass
class Seen:
    """One lending: the session it ran on, what came back, the bytes sent on return."""

    session: int
    rows: list[Any] = field(default_factory=list)
    on_return: int = 0
    error: BaseException | None = None


@pytest.fixture(params=ENGINES)
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    yield from make_target(request.param)


async def _wire(target: Target, **overrides: Any) -> AsyncIterator[Wire]:
    host, port = (dbs.PG_HOST, dbs.PG_PORT) if target.is_pg else (dbs.MY_HOST, dbs.MY_PORT)
    async with TcpProxy(host, port) as proxy:
        config = target.config(max_connections=1, port=proxy.port, **overrides)
        pool = ManagedPool(config, Settings())
        try:
            yield Wire(pool, proxy, target)
        finally:
            await pool.aclose(1.0)


@pytest.fixture
async def wire(target: Target) -> AsyncIterator[Wire]:
    async for made in _wire(target):
        yield made


Step = str | tuple[str, Any] | Sequence[Statement]


async def lend(wire: Wire, *steps: Step, timeout: float | None = None) -> Seen:
    """One lending running ``steps`` in order (SQL, (SQL, params), or a transaction's
    statements); the first failure ends it and is kept in ``error``."""
    pool = wire.pool
    async with pool.connection() as conn:
        driver = (await conn.get_raw_connection()).driver_connection
        seen = Seen(adapter_of(driver).server_id(driver))
        try:
            for step in steps:
                seen.rows = await _step(conn, pool, step, timeout)
        except DbPoolError as exc:
            seen.error = exc
        sent = wire.proxy.sent_upstream
    await asyncio.sleep(_SETTLE)
    seen.on_return = wire.proxy.sent_upstream - sent
    return seen


async def _step(conn: Any, pool: ManagedPool, step: Step, timeout: float | None) -> list[Any]:
    if isinstance(step, str | tuple):
        sql, params = (step, None) if isinstance(step, str) else step
        result = await run_query(conn, pool.config, sql, params, max_rows=100,
                                 row_format="array", timeout_seconds=timeout)
        return result.rows
    done = await run_transaction(conn, pool.config, step, max_rows=100, row_format="array")
    return done.results[-1].rows


async def leaves_nothing(wire: Wire, dirty: Sequence[Step], probe: str) -> Any:
    """Run ``dirty`` in one lending, then ``probe`` in the next on the same session (a new
    one on a driver path that discards instead); the first value ``probe`` returns."""
    first = await lend(wire, *dirty)
    if wire.tracks:
        assert first.on_return > 0, "the dirty session was returned without a reset"
    second = await lend(wire, probe)
    assert (second.session == first.session) == reuses_sessions(wire.pool.config.db_type)
    if second.error is not None:
        raise second.error
    return second.rows[0][0] if second.rows else None


# -- the wire: a plain read sends nothing on return -------------------------------------


async def test_a_plain_select_leaves_no_reset_on_the_wire(wire: Wire) -> None:
    point = "SELECT 1 + :x AS y, upper('a'), now() IS NOT NULL"
    first = await lend(wire, (point, {"x": 1}))
    assert first.rows[0][0] == 2
    again = await lend(wire, (point, {"x": 2}), "SELECT 2")  # two plain reads, one lending
    if not wire.tracks:  # MySQL public path: cannot see warnings, so it never trusts a
        assert again.on_return > 0  # session: closed on return, a new one lent
        assert again.session != first.session
        return
    assert again.session == first.session
    assert (first.on_return, again.on_return) == (0, 0)
    # A SET: the reset goes on the wire, and the session is lent again, cleaned.
    setting = "SET work_mem = '2MB'" if wire.pg else "SET SESSION sort_buffer_size = 40960"
    dirty = await lend(wire, setting)
    assert dirty.on_return > 0 and dirty.error is None
    after = await lend(wire, "SELECT 3")
    assert after.session == first.session and after.on_return == 0


async def test_a_refused_plain_read_stays_clean_but_a_refused_set_does_not(wire: Wire) -> None:
    failed = await lend(wire, "SELECT * FROM no_such_table_at_all")
    assert isinstance(failed.error, QueryError)
    assert failed.on_return == 0 if wire.tracks else failed.on_return > 0
    refused = await lend(wire, "SET no_such_setting_at_all = 1")
    assert refused.error is not None and refused.on_return > 0


async def test_a_read_only_connections_plain_read_stays_clean(target: Target) -> None:
    async for wire in _wire(target, read_only=True):
        first = await lend(wire, ("SELECT 1 + :x", {"x": 1}))
        assert first.rows == [[2]] and first.error is None
        assert first.on_return == 0 if wire.tracks else first.on_return > 0
        second = await lend(wire, "SELECT 2")
        assert second.session == first.session or not wire.tracks


async def test_a_client_timeout_dirties_the_session(wire: Wire) -> None:
    sleep = "SELECT pg_sleep(5)" if wire.pg else "SELECT SLEEP(5)"
    assert analyse(sleep, wire.pool.config.db_type).read_only  # clean by the analyser
    timed_out = await lend(wire, sleep, timeout=0.3)
    assert isinstance(timed_out.error, QueryTimeout)
    assert timed_out.on_return > 0 or not wire.pg  # MySQL: discarded (KILL QUERY)
    assert (await lend(wire, "SELECT 7")).rows == [[7]]


# -- PostgreSQL: nothing leaks -----------------------------------------------------------


@pytest.fixture
async def pg_wire() -> AsyncIterator[Wire]:
    for target in make_target("postgresql"):
        async for made in _wire(target):
            yield made


@contextlib.asynccontextmanager
async def pg_objects(*ddl: str, drop: Sequence[str]) -> AsyncIterator[None]:
    own = await _pg_owner()
    try:
        for sql in ddl:
            await own.execute(sql)
        yield
    finally:
        for sql in drop:
            with contextlib.suppress(Exception):
                await own.execute(sql)
        await own.close()


async def _pg_owner() -> Any:
    import asyncpg

    return await asyncpg.connect(host=dbs.PG_HOST, port=dbs.PG_PORT, user=dbs.PG_USER,
                                 password=dbs.PG_PASSWORD, database=dbs.PG_DATABASE)


PG_CASES: dict[str, tuple[list[str], str, Callable[[Any], bool]]] = {
    "set": (["SET work_mem = '1234kB'"], "SHOW work_mem", lambda v: v != "1234kB"),
    "search_path": (["SET search_path TO pg_catalog"], "SHOW search_path",
                    lambda v: v == '"$user", public'),
    "temp_table": (["CREATE TEMP TABLE tmp_leak (x int)"],
                   "SELECT to_regclass('pg_temp.tmp_leak') IS NULL", lambda v: v is True),
    "prepare": (["PREPARE leak AS SELECT 1"],
                "SELECT count(*) FROM pg_prepared_statements WHERE from_sql", lambda v: v == 0),
    "listen": (["LISTEN leak_channel"], "SELECT count(*) FROM pg_listening_channels()",
               lambda v: v == 0),
    "advisory_lock": (["SELECT pg_advisory_lock(424242)"],
                      "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                      "AND pid = pg_backend_pid()", lambda v: v == 0),
    "set_config_in_select": (["SELECT set_config('work_mem', '2345kB', false)"],
                             "SHOW work_mem", lambda v: v != "2345kB"),
    "cursor": (["DECLARE leak_cur CURSOR WITH HOLD FOR SELECT 1"],
               "SELECT count(*) FROM pg_cursors WHERE name = 'leak_cur'", lambda v: v == 0),
    "discard_all": (["DISCARD ALL"], "SELECT 41 + 1", lambda v: v == 42),
}


@pytest.mark.parametrize("case", sorted(PG_CASES))
async def test_postgresql_session_state_does_not_leak(pg_wire: Wire, case: str) -> None:
    dirty, probe, check = PG_CASES[case]
    assert check(await leaves_nothing(pg_wire, dirty, probe))


async def test_postgresql_an_open_write_and_a_failed_transaction_do_not_leak(
        pg_wire: Wire) -> None:
    table = f"rod_{secrets.token_hex(4)}"
    async with pg_objects(f"CREATE TABLE {table} (x int)", drop=[f"DROP TABLE {table}"]):
        count = f"SELECT count(*) FROM {table}"
        insert = f"INSERT INTO {table} VALUES (1)"
        # BEGIN sent as SQL and a write left open.
        assert await leaves_nothing(pg_wire, ["BEGIN", insert], count) == 0
        # A plain read refused inside that open transaction: a refusal, but not clean.
        assert await leaves_nothing(pg_wire, ["BEGIN", insert, "SELECT 1/0"], count) == 0
        # /transaction: a statement fails, everything is rolled back.
        failed = [Statement(sql=insert), Statement(sql="SELECT 1/0")]
        assert await leaves_nothing(pg_wire, [failed], count) == 0
        # /transaction of plain reads only: still reset (every transaction is).
        reads = await lend(pg_wire, [Statement(sql="SELECT 1")])
        assert reads.error is None and reads.on_return > 0


async def test_postgresql_statement_cache_survives_deallocate_and_discard_all(
        pg_wire: Wire) -> None:
    cached = ("SELECT CAST(:x AS int) + 1", {"x": 1})
    first = await lend(pg_wire, cached, cached)  # prepared once, then from the cache
    for wipe in ("DEALLOCATE ALL", "DISCARD ALL", "DEALLOCATE PREPARE ALL"):
        wiped = await lend(pg_wire, wipe)
        assert wiped.session == first.session and wiped.on_return > 0
        again = await lend(pg_wire, cached)
        assert again.error is None and again.rows == [[2]]
        assert again.session == first.session and again.on_return == 0


async def test_postgresql_unknown_function_that_sets_does_not_leak(pg_wire: Wire) -> None:
    fn = f"rod_fn_{secrets.token_hex(4)}"
    body = "BEGIN PERFORM set_config('work_mem', '3456kB', false); RETURN 1; END"
    async with pg_objects(
            f"CREATE FUNCTION {fn}() RETURNS int LANGUAGE plpgsql AS $$ {body} $$",
            drop=[f"DROP FUNCTION {fn}()"]):
        assert not analyse(f"SELECT {fn}()", pg_wire.pool.config.db_type).read_only
        assert await leaves_nothing(pg_wire, [f"SELECT {fn}()"], "SHOW work_mem") != "3456kB"


async def test_postgresql_a_reported_setting_changed_out_of_sight_is_reset(
        pg_wire: Wire) -> None:
    # A view hides the function from the analyser: a plain read to it. The server's
    # ParameterStatus (TimeZone is a reported setting) is what tells the session changed.
    fn, view = f"rod_tz_{secrets.token_hex(4)}", f"rod_v_{secrets.token_hex(4)}"
    body = "BEGIN PERFORM set_config('TimeZone', 'Asia/Tokyo', false); RETURN 1; END"
    async with pg_objects(
            f"CREATE FUNCTION {fn}() RETURNS int LANGUAGE plpgsql AS $$ {body} $$",
            f"CREATE VIEW {view} AS SELECT {fn}() AS x",
            drop=[f"DROP VIEW {view}", f"DROP FUNCTION {fn}()"]):
        default = (await lend(pg_wire, "SHOW TimeZone")).rows[0][0]
        assert default != "Asia/Tokyo"
        hidden = f"SELECT x FROM {view}"
        assert analyse(hidden, pg_wire.pool.config.db_type).read_only
        assert await leaves_nothing(pg_wire, [hidden], "SHOW TimeZone") == default


# -- MySQL / MariaDB: nothing leaks ------------------------------------------------------


@pytest.fixture(params=["mysql", "mariadb"])
async def my_wire(request: pytest.FixtureRequest) -> AsyncIterator[Wire]:
    for target in make_target(request.param):
        async for made in _wire(target):
            yield made


MY_CASES: dict[str, tuple[list[str], str, Callable[[Any], bool]]] = {
    "set": (["SET SESSION sort_buffer_size = 40960"], "SELECT @@sort_buffer_size",
            lambda v: int(v) != 40960),
    "use": (["USE information_schema"], "SELECT DATABASE()", lambda v: v == dbs.MY_DATABASE),
    "user_variable_in_select": (["SELECT @leak := 5"], "SELECT @leak", lambda v: v is None),
    "named_lock": (["SELECT GET_LOCK('rod_leak', 0)"], "SELECT IS_USED_LOCK('rod_leak')",
                   lambda v: v is None),
    "autocommit_off": (["SET autocommit = 0"], "SELECT @@autocommit", lambda v: int(v) == 1),
    "warnings": (["SELECT CAST('abc' AS SIGNED)"], "SELECT @@warning_count",
                 lambda v: int(v) == 0),
}


@pytest.mark.parametrize("case", sorted(MY_CASES))
async def test_mysql_session_state_does_not_leak(my_wire: Wire, case: str) -> None:
    dirty, probe, check = MY_CASES[case]
    assert check(await leaves_nothing(my_wire, dirty, probe))


async def test_mysql_prepared_statements_and_temp_tables_do_not_leak(my_wire: Wire) -> None:
    with pytest.raises(QueryError, match=r"(?i)unknown prepared statement"):
        await leaves_nothing(my_wire, ["PREPARE leak FROM 'SELECT 1'"], "EXECUTE leak")
    with pytest.raises(QueryError, match="doesn't exist"):
        await leaves_nothing(my_wire, ["CREATE TEMPORARY TABLE tmp_leak (x int)"],
                             "SELECT * FROM tmp_leak")


@contextlib.contextmanager
def my_objects(*ddl: str, drop: Sequence[str]) -> Iterator[None]:
    admin = dbs.my_admin()
    try:
        with admin.cursor() as cur:
            cur.execute(f"USE {dbs.MY_DATABASE}")
            for sql in ddl:
                cur.execute(sql)
        yield
    finally:
        with admin.cursor() as cur:
            for sql in drop:
                with contextlib.suppress(Exception):
                    cur.execute(sql)
        admin.close()


async def test_mysql_locks_open_writes_and_failed_transactions_do_not_leak(
        my_wire: Wire) -> None:
    one, two = f"rod_{secrets.token_hex(4)}", f"rod_{secrets.token_hex(4)}"
    with my_objects(f"CREATE TABLE {one} (x int)", f"CREATE TABLE {two} (x int)",
                    drop=[f"DROP TABLE {one}", f"DROP TABLE {two}"]):
        count = f"SELECT COUNT(*) FROM {one}"
        insert = f"INSERT INTO {one} VALUES (1)"
        # LOCK TABLES: the next request could read no other table.
        assert await leaves_nothing(my_wire, [f"LOCK TABLES {two} READ"], count) == 0
        # autocommit off with a write left open; a transaction begun as SQL.
        assert await leaves_nothing(my_wire, ["SET autocommit = 0", insert], count) == 0
        assert await leaves_nothing(my_wire, ["START TRANSACTION", insert], count) == 0
        # A plain read refused inside that open transaction.
        assert await leaves_nothing(
            my_wire, ["START TRANSACTION", insert, "SELECT * FROM no_such_table"], count) == 0
        failed = [Statement(sql=insert), Statement(sql="SELECT * FROM no_such_table")]
        assert await leaves_nothing(my_wire, [failed], count) == 0


async def test_mysql_unknown_function_that_sets_does_not_leak(my_wire: Wire) -> None:
    fn = f"rod_fn_{secrets.token_hex(4)}"
    with my_objects(
            f"CREATE FUNCTION {fn}() RETURNS INT DETERMINISTIC BEGIN SET @leak = 7; "
            "RETURN 1; END",
            drop=[f"DROP FUNCTION {fn}"]):
        assert not analyse(f"SELECT {fn}()", my_wire.pool.config.db_type).read_only
        assert await leaves_nothing(my_wire, [f"SELECT {fn}()"], "SELECT @leak") is None
