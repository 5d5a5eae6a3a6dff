"""Issue 9 on the real servers: every way out of a caller's lane is refused (4xx, never 5xx)
and writes nothing; binding never lets a value run as SQL; the statement cache survives a
caller's DEALLOCATE / DISCARD; MySQL's protocol refuses stacked statements on its own."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from app.pools.query import run_query
from tests.support import dbs
from tests.support.query import (
    BASE,
    ENGINES,
    Api,
    admin_exec,
    api,
    query_registry,
    running_api,
    unique,
)
from tests.support.seam import fast_path

__all__ = ["api", "query_registry"]  # fixtures

pytestmark = [pytest.mark.postgresql, pytest.mark.mariadb]

MYSQLS = ["mysql", "mariadb"]


def code_of(response: Any) -> tuple[int, str]:
    body = response.json()
    assert body["success"] is False, body
    return response.status_code, body["error"]["code"]


async def count(db_type: str, table: str) -> int:
    rows = await admin_exec(db_type, f"SELECT count(*) FROM {table}")
    return int(rows[0][0])


class Table:
    """A throwaway one-column table ``t (id int, note text)`` on ``db_type``."""

    def __init__(self, db_type: str) -> None:
        self.db_type, self.name = db_type, unique("lane")

    async def __aenter__(self) -> str:
        await admin_exec(self.db_type, f"CREATE TABLE {self.name} (id int, note text)")
        await admin_exec(self.db_type, f"INSERT INTO {self.name} VALUES (1, 'keep')")
        return self.name

    async def __aexit__(self, *exc: object) -> None:
        await admin_exec(self.db_type, f"DROP TABLE IF EXISTS {self.name}")


@pytest.mark.parametrize("db_type", ENGINES)
async def test_stacked_statements_are_refused_before_sending(api: Api, db_type: str) -> None:
    cid = await api.register(db_type)
    async with Table(db_type) as t:
        for sql in (f"SELECT 1 AS one; DROP TABLE {t}",
                    f"SELECT 1 AS one; /* x */ DELETE FROM {t} -- y",
                    f"SELECT ';' AS s; DELETE FROM {t}"):
            response = await api.query(cid, sql)
            assert code_of(response) == (422, "VALIDATION_ERROR"), response.text
            assert "One statement per request: found 2" in response.json()["error"]["message"]
            item = await api.transaction(cid, [{"sql": "SELECT 1"}, {"sql": sql}])
            assert code_of(item) == (422, "VALIDATION_ERROR")
            assert item.json()["error"]["details"]["statementIndex"] == 1
        assert await count(db_type, t) == 1
        # A single trailing ';' and trailing comments are fine.
        assert await api.rows(cid, "SELECT 1 AS one; -- done\n/* really */") == [{"one": 1}]


@pytest.mark.parametrize("db_type", ENGINES)
async def test_transaction_control_inside_transaction_commits_nothing(
        api: Api, db_type: str) -> None:
    cid = await api.register(db_type)
    async with Table(db_type) as t:
        slipped = ["COMMIT", "ROLLBACK", "BEGIN", "START TRANSACTION", "SET autocommit = 1"
                   if db_type != "postgresql" else "END", "SET TRANSACTION READ WRITE"]
        if db_type == "postgresql":
            slipped += ["ABORT", "PREPARE TRANSACTION 'x'", "COMMIT PREPARED 'x'",
                        "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE"]
        else:
            slipped += ["LOCK TABLES t1 WRITE", "UNLOCK TABLES", "XA START 'x'",
                        f"CREATE TABLE {t}_x (id int)", f"DROP TABLE {t}", "CALL p()"]
        for sql in slipped:
            response = await api.transaction(cid, [
                {"sql": f"INSERT INTO {t} VALUES (2, 'no')"},
                {"sql": sql},
                {"sql": f"INSERT INTO {t} VALUES (1, 'dup')"},
            ])
            assert code_of(response) == (422, "VALIDATION_ERROR"), (sql, response.text)
            assert response.json()["error"]["details"]["statementIndex"] == 1
        assert await count(db_type, t) == 1
        # Savepoints cannot end the outer transaction: they stay.
        response = await api.transaction(cid, [
            {"sql": f"INSERT INTO {t} VALUES (2, 'a')"},
            {"sql": "SAVEPOINT s1"},
            {"sql": f"INSERT INTO {t} VALUES (3, 'b')"},
            {"sql": "ROLLBACK TO SAVEPOINT s1"},
            {"sql": f"SELECT id FROM {t} ORDER BY id"},
        ])
        assert response.status_code == 200, response.text
        assert response.json()["data"]["results"][4]["rows"] == [{"id": 1}, {"id": 2}]


@pytest.mark.parametrize("db_type", ENGINES)
async def test_read_only_cannot_be_undone_by_the_caller(api: Api, db_type: str) -> None:
    cid = await api.register(db_type, readOnly=True)
    pg = db_type == "postgresql"
    async with Table(db_type) as t:
        insert = {"sql": f"INSERT INTO {t} VALUES (9, 'w')"}
        attempts: list[list[dict[str, Any]]] = [
            [{"sql": "SET TRANSACTION READ WRITE"}, insert],
            [{"sql": "COMMIT"}, insert],
            [{"sql": "START TRANSACTION READ WRITE"}, insert],
        ]
        if pg:
            attempts += [
                [{"sql": "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE"},
                 {"sql": "COMMIT"}, insert],
                [{"sql": "SELECT set_config('default_transaction_read_only', 'off', false)"},
                 {"sql": "COMMIT"}, insert],
            ]
        for statements in attempts:
            response = await api.transaction(cid, statements)
            assert response.status_code in (403, 422), (statements, response.text)
        refused = [f"SET SESSION TRANSACTION READ WRITE; INSERT INTO {t} VALUES (9, 'w')",
                   "SET SESSION TRANSACTION READ WRITE", "BEGIN", f"CREATE TABLE {t}_x (id int)",
                   "CALL p()"]
        if pg:
            refused += ["SELECT set_config('transaction_read_only', 'off', true)",
                        "SET default_transaction_read_only = off", "DISCARD ALL",
                        "CREATE TEMP TABLE x (id int)"]
        for sql in refused:
            response = await api.query(cid, sql)
            assert response.status_code in (403, 422), (sql, response.text)
            assert response.status_code < 500
        assert code_of(await api.query(cid, "SET x = 1" if pg else "SET @x = 1")) == (
            403, "READ_ONLY")
        assert code_of(await api.query(cid, insert["sql"])) == (403, "READ_ONLY")
        assert await count(db_type, t) == 1
        assert await api.rows(cid, f"SELECT count(*) AS c FROM {t}") == [{"c": 1}]
        in_tx = await api.transaction(cid, [{"sql": f"SELECT id FROM {t}"}],
                                      isolationLevel="REPEATABLE READ")
        assert in_tx.status_code == 200, in_tx.text


@pytest.mark.parametrize("db_type", ENGINES)
async def test_read_only_function_that_writes_meets_the_database(api: Api, db_type: str) -> None:
    """A function the analyser cannot see into runs inside the read-only transaction (on
    PostgreSQL after its snapshot): it can neither make it read-write nor write."""
    cid = await api.register(db_type, readOnly=True)
    async with Table(db_type) as t:
        function = f"{t}_writer"
        if db_type == "postgresql":
            body = f"""CREATE FUNCTION {function}() RETURNS int LANGUAGE plpgsql AS $$
                BEGIN
                  PERFORM set_config('transaction_read_only', 'off', true);
                  INSERT INTO {t} VALUES (9, 'w');
                  RETURN 1;
                END $$"""
        else:
            body = f"""CREATE FUNCTION {function}() RETURNS int MODIFIES SQL DATA
                BEGIN INSERT INTO {t} VALUES (9, 'w'); RETURN 1; END"""
        await admin_exec(db_type, body)
        try:
            response = await api.query(cid, f"SELECT {function}() AS w")
            assert response.status_code in (400, 403), response.text
            if db_type != "postgresql":  # PostgreSQL: "cannot set ... after any query"
                assert code_of(response) == (403, "READ_ONLY")
            assert await count(db_type, t) == 1
        finally:
            await admin_exec(db_type, f"DROP FUNCTION {function}" + (
                "()" if db_type == "postgresql" else ""))


@pytest.mark.parametrize("db_type", ENGINES)
async def test_placeholder_in_quotes_never_runs_a_value(api: Api, db_type: str) -> None:
    cid = await api.register(db_type)
    async with Table(db_type) as t:
        attack = {"who": f"; DELETE FROM {t}; SELECT "}
        rows = await api.rows(cid, f"SELECT note FROM {t} WHERE note = ':who'", params=attack)
        assert rows == []
        rows = await api.rows(cid, f"SELECT note FROM {t} WHERE note <> ':who' AND id = :id",
                              params={**attack, "id": 1})
        assert rows == [{"note": "keep"}]
        quote = {"who": f"x'; DELETE FROM {t}; -- "}
        rows = await api.rows(cid, "SELECT :who AS v, ':who' AS lit", params=quote)
        assert rows == [{"v": quote["who"], "lit": ":who"}]
        assert await count(db_type, t) == 1


async def test_postgres_json_literal_and_placeholder(api: Api) -> None:
    cid = await api.register("postgresql")
    rows = await api.rows(cid, """SELECT '{"a":1}'::jsonb AS j, :g AS g, 'a :b' AS s,
                                  $$:x$$ AS d, "col :x" FROM (SELECT 1 AS "col :x") q -- :c""",
                          params={"g": "G"})
    assert rows == [{"j": {"a": 1}, "g": "G", "s": "a :b", "d": ":x", "col :x": 1}]
    rows = await api.rows(cid, "SELECT (ARRAY[1,2,3])[2:3] AS sl, :n::int * 2 AS n, "
                               "'{\"k\": 2}'::jsonb ? 'k' AS has, '{\"k\": 2}'::jsonb ->> 'k' AS k",
                          params={"n": "21"})
    assert rows == [{"sl": [2, 3], "n": 42, "has": True, "k": "2"}]


@pytest.mark.parametrize("db_type", MYSQLS)
async def test_mysql_percent_survives_named_binding(api: Api, db_type: str) -> None:
    cid = await api.register(db_type)
    rows = await api.rows(cid, "SELECT '50%' AS p, :v AS v, 'a%s' AS s, "
                               "'x' LIKE 'x%' AS l, \"b :v\" AS d # :c\n", params={"v": "%s%%"})
    assert rows == [{"p": "50%", "v": "%s%%", "s": "a%s", "l": 1, "d": "b :v"}]
    inside = await api.query(cid, "SELECT '%s' AS v", params=["x"])
    assert code_of(inside) == (422, "VALIDATION_ERROR")  # a value would land in the quotes
    count_off = await api.query(cid, "SELECT %s AS a, %s AS b", params=[1])
    assert code_of(count_off) == (422, "VALIDATION_ERROR")


@pytest.mark.parametrize("db_type", ENGINES)
async def test_unreadable_and_empty_sql_is_422(api: Api, db_type: str) -> None:
    cid = await api.register(db_type)
    for sql in ("SELECT 'unterminated", "SELECT 1 /* open", "-- only a comment", ";"):
        response = await api.query(cid, sql)
        assert code_of(response) == (422, "VALIDATION_ERROR"), (sql, response.text)
    mixed = "SELECT $1::int AS a, :b AS b" if db_type == "postgresql" else \
        "SELECT %s AS a, :b AS b"
    assert code_of(await api.query(cid, mixed, params={"b": 1})) == (422, "VALIDATION_ERROR")


@pytest.mark.parametrize("wipe", ["DEALLOCATE ALL", "DISCARD ALL", "DISCARD PLANS", "by-name"])
async def test_statement_cache_survives_a_callers_deallocate(api: Api, wipe: str) -> None:
    cid = await api.register("postgresql", maxConnections=1)
    queries = [(f"SELECT :a::int + {i} AS n", i) for i in range(5)]
    for sql, i in queries:
        assert await api.rows(cid, sql, params={"a": 1}) == [{"n": 1 + i}]
    if wipe == "by-name":  # not a wipe the analyser knows: the 26000 retry recovers
        names = await api.rows(cid, "SELECT name FROM pg_prepared_statements "
                                    "WHERE NOT from_sql", rowFormat="array")
        assert bool(names) == fast_path("postgresql")  # the public path names none
        for (name,) in names:
            response = await api.query(cid, f'DEALLOCATE "{name}"')
            assert response.status_code == 200, response.text
    else:
        assert (await api.query(cid, wipe)).status_code == 200
    for _ in range(2):
        for sql, i in queries:
            assert await api.rows(cid, sql, params={"a": 2}) == [{"n": 2 + i}]
    assert api.snapshot(cid).stats.acquisitions >= 10


@pytest.mark.parametrize(("db_type", "driver"), [("mysql", "aiomysql"),
                                                  ("mariadb", "aiomysql"),
                                                  ("mariadb", "asyncmy")])
async def test_mysql_protocol_refuses_stacked_statements(
        query_registry: str, db_type: str, driver: str) -> None:
    """Bypassing the analyser (a raw driver call on a pooled connection), the server itself
    refuses a second statement, before and after the reset on return."""
    async with running_api(query_registry, mysql_driver=driver) as api, Table(db_type) as t:
        cid = await api.register(db_type, maxConnections=1)
        if not fast_path(db_type, driver):
            # The public path cannot send COM_SET_OPTION: only the analyser refuses it.
            response = await api.query(cid, f"SELECT 1; DELETE FROM {t}")
            assert code_of(response) == (422, "VALIDATION_ERROR")
            assert await count(db_type, t) == 1
            return
        pool = await api.app.state.parts.pools.get(cid)

        async def stacked(conn: AsyncConnection) -> tuple[int, int]:
            raw = await conn.get_raw_connection()
            connection = raw.driver_connection
            cursor = await _cursor(connection)
            try:
                await cursor.execute(f"SELECT 1; DELETE FROM {t}")
            except Exception as exc:
                return int(exc.args[0]), id(connection)
            finally:
                await cursor.close()
            raise AssertionError("the server ran a stacked statement")

        errno, first = await pool.run(stacked)
        assert errno == 1064
        errno, second = await pool.run(stacked)  # after COM_RESET_CONNECTION
        assert errno == 1064 and second == first
        assert await count(db_type, t) == 1


async def _cursor(driver: Any) -> Any:
    cursor = driver.cursor()
    return await cursor if hasattr(cursor, "__await__") else cursor


@pytest.mark.parametrize("db_type", ENGINES)
async def test_connection_test_reports_can_write(api: Api, db_type: str) -> None:
    cid = await api.register(db_type)
    response = await api.client.post(f"{BASE}/{cid}/test")
    assert response.json()["data"]["canWrite"] is True, response.text
    user, password = unique("ro"), "ro-" + secrets.token_hex(8)
    await _select_only_login(db_type, user, password)
    try:
        ro = await api.register(db_type, username=user, password=password, readOnly=True)
        response = await api.client.post(f"{BASE}/{ro}/test")
        assert response.status_code == 200, response.text
        assert response.json()["data"]["canWrite"] is False
    finally:
        await _drop_login(db_type, user)


async def _select_only_login(db_type: str, user: str, password: str) -> None:
    if db_type == "postgresql":
        conn = await dbs.pg_admin()
        try:
            await conn.execute(f"CREATE ROLE {user} LOGIN PASSWORD '{password}'")
            await conn.execute(f"GRANT CONNECT ON DATABASE {dbs.PG_DATABASE} TO {user}")
        finally:
            await conn.close()
        return
    for host in ("%", "localhost"):
        await admin_exec(db_type, f"CREATE USER '{user}'@'{host}' IDENTIFIED BY '{password}'")
        await admin_exec(db_type, f"GRANT SELECT ON {dbs.MY_DATABASE}.* TO '{user}'@'{host}'")


async def _drop_login(db_type: str, user: str) -> None:
    if db_type == "postgresql":
        conn = await dbs.pg_admin()
        try:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", user)
            await conn.execute(f"REVOKE ALL ON DATABASE {dbs.PG_DATABASE} FROM {user}")
            await conn.execute(f"DROP ROLE IF EXISTS {user}")
        finally:
            await conn.close()
        return
    for host in ("%", "localhost"):
        await admin_exec(db_type, f"DROP USER IF EXISTS '{user}'@'{host}'")


@pytest.mark.parametrize("db_type", MYSQLS)
async def test_mysql_no_backslash_escapes_session_is_read_its_way(
        api: Api, db_type: str) -> None:
    """A session whose sql_mode has NO_BACKSLASH_ESCAPES (the server's default on some
    installations) is read the server's way: a backslash ends nothing in a literal."""
    cid = await api.register(db_type, maxConnections=1)
    pool = await api.app.state.parts.pools.get(cid)
    value = "x\\'; DELETE FROM t; -- \\"

    async def in_nbe_session(conn: AsyncConnection) -> list[Any]:
        raw = await conn.get_raw_connection()
        cursor = await _cursor(raw.driver_connection)
        await cursor.execute("SET sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES')")
        await cursor.close()
        result = await run_query(conn, pool.config, "SELECT 'C:\\' AS p, :v AS v",
                                 {"v": value}, max_rows=1)
        return result.rows

    assert await pool.run(in_nbe_session) == [{"p": "C:\\", "v": value}]
    # The reset on return restored the mode: read with backslash escapes, the same text
    # never closes its first literal.
    plain = await api.query(cid, "SELECT 'C:\\' AS p, :v AS v", params={"v": value})
    assert code_of(plain) == (422, "VALIDATION_ERROR")
    # Inside /transaction the mode cannot change under the statements that follow.
    for sql in ("SET sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES')",
                "SET @x = 1, SESSION sql_mode = 'ANSI_QUOTES'"):
        response = await api.transaction(cid, [{"sql": sql}, {"sql": "SELECT 1"}])
        assert code_of(response) == (422, "VALIDATION_ERROR"), response.text
        assert response.json()["error"]["details"]["statementIndex"] == 0


async def test_postgres_standard_conforming_strings_cannot_change_in_transaction(
        api: Api) -> None:
    cid = await api.register("postgresql")
    response = await api.transaction(cid, [{"sql": "SET standard_conforming_strings = off"},
                                           {"sql": "SELECT 'a\\' AS a"}])
    assert code_of(response) == (422, "VALIDATION_ERROR"), response.text


async def test_postgres_session_without_standard_strings_is_read_its_way(api: Api) -> None:
    """With standard_conforming_strings off, a backslash escapes in '...' too: the
    statement is read that way, its placeholder found where the server sees code."""
    cid = await api.register("postgresql", maxConnections=1)
    pool = await api.app.state.parts.pools.get(cid)

    async def in_old_style_session(conn: AsyncConnection) -> list[Any]:
        raw = await conn.get_raw_connection()
        await raw.driver_connection.execute("SET standard_conforming_strings = off")
        result = await run_query(conn, pool.config, "SELECT 'it\\'s :x' AS p, :v AS v",
                                 {"v": "V"}, max_rows=1)
        return result.rows

    assert await pool.run(in_old_style_session) == [{"p": "it's :x", "v": "V"}]
    assert await api.rows(cid, "SELECT 'a\\' AS p, :v AS v", params={"v": "V"}) == [
        {"p": "a\\", "v": "V"}]  # the reset on return put the standard back


@pytest.mark.parametrize("db_type", ENGINES)
async def test_read_only_reads_truncate_and_the_pool_keeps_serving(api: Api, db_type: str) -> None:
    cid = await api.register(db_type, readOnly=True, maxConnections=1)
    big = "SELECT generate_series(1, 5000) AS n" if db_type == "postgresql" else \
        "SELECT seq AS n FROM seq_1_to_5000"
    for _ in range(3):
        response = await api.query(cid, big, maxRows=10)
        assert response.status_code == 200, response.text
        data = response.json()["data"]
        assert data["truncated"] is True and data["rowCount"] == 10
        assert await api.rows(cid, "SELECT :v AS v", params={"v": "ok"}) == [{"v": "ok"}]
    snap = api.snapshot(cid)
    assert snap.checked_out == 0 and snap.open <= 1
