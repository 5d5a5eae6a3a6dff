"""Which statements leave a session clean (``session_state.leaves_clean``), and the
dirty/clean bookkeeping on a pool record's ``info``. The databases' side of it is in
tests/integration/test_reset_on_demand.py."""

from __future__ import annotations

from typing import Any

import pytest

from app.domain import DbType
from app.pools import catalogue
from app.pools.session_state import leaves_clean, mark_clean, mark_dirty, needs_reset
from app.sql import analyse

PG, MY = DbType.POSTGRESQL, DbType.MARIADB

CLEAN = [
    (PG, "SELECT 1"),
    (PG, "SELECT * FROM t WHERE id = :id"),
    (PG, "select lower(name), count(*) from t group by 1;"),
    (PG, "WITH a AS (SELECT 1 AS x) SELECT x FROM a"),
    (PG, "SELECT now(), current_setting('work_mem'), pg_backend_pid()"),
    (PG, "VALUES (1), (2)"),
    (PG, "TABLE t"),
    (PG, "SHOW work_mem"),
    (PG, "EXPLAIN SELECT 1"),
    (PG, "SELECT pg_sleep(0.1)"),
    (MY, "SELECT 1"),
    (MY, "SELECT CONCAT(a, b) FROM t WHERE id = %s"),
    (MY, "SELECT @x"),  # reads a user variable, changes nothing
    (MY, "SHOW TABLES"),
    (MY, "SELECT SLEEP(0.1)"),
]

DIRTY = [
    (PG, "SET work_mem = '1MB'"),
    (PG, "RESET ALL"),
    (PG, "SET search_path TO x"),
    (PG, "SELECT set_config('work_mem', '1MB', false)"),
    (PG, "SELECT pg_advisory_lock(1)"),
    (PG, "SELECT pg_try_advisory_lock(1)"),
    (PG, "SELECT my_function()"),  # unknown: may SET
    (PG, "SELECT * FROM t WHERE x = my_function()"),
    (PG, "PREPARE p AS SELECT 1"),
    (PG, "DEALLOCATE ALL"),
    (PG, "DISCARD ALL"),
    (PG, "LISTEN c"),
    (PG, "LOCK TABLE t"),
    (PG, "CREATE TEMP TABLE x (a int)"),
    (PG, "SELECT * INTO TEMP x FROM t"),
    (PG, "DECLARE c CURSOR WITH HOLD FOR SELECT 1"),
    (PG, "BEGIN"),
    (PG, "COMMIT"),
    (PG, "SELECT * FROM t FOR UPDATE"),
    (PG, "INSERT INTO t VALUES (1)"),  # a serial column's nextval sets currval/lastval
    (PG, "UPDATE t SET x = 1"),
    (PG, "DELETE FROM t"),
    (PG, "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d"),
    (PG, "SELECT nextval('s')"),
    (PG, "CREATE TABLE x (a int)"),
    (PG, "CALL p()"),
    (PG, "DO $$ BEGIN END $$"),
    (PG, "SELECT 'unterminated"),
    (PG, "SELECT 1; SELECT 2"),
    (MY, "SET @x = 1"),
    (MY, "SELECT @x := 1"),
    (MY, "SELECT 1 INTO @x"),
    (MY, "SET autocommit = 0"),
    (MY, "SET NAMES latin1"),
    (MY, "USE information_schema"),
    (MY, "SELECT GET_LOCK('a', 0)"),
    (MY, "SELECT RELEASE_LOCK('a')"),
    (MY, "LOCK TABLES t READ"),
    (MY, "UNLOCK TABLES"),
    (MY, "START TRANSACTION"),
    (MY, "PREPARE s FROM 'SELECT 1'"),
    (MY, "DEALLOCATE PREPARE s"),
    (MY, "CREATE TEMPORARY TABLE x (a int)"),
    (MY, "HANDLER t OPEN"),
    (MY, "INSERT INTO t VALUES (1)"),  # LAST_INSERT_ID()
    (MY, "SELECT * FROM t LOCK IN SHARE MODE"),
    (MY, "SELECT my_function()"),
    (MY, "CALL p()"),
]


@pytest.mark.parametrize(("db_type", "sql"), CLEAN)
def test_plain_reads_of_known_functions_leave_the_session_clean(db_type: DbType,
                                                                 sql: str) -> None:
    assert leaves_clean(analyse(sql, db_type))


@pytest.mark.parametrize(("db_type", "sql"), DIRTY)
def test_anything_that_could_change_the_session_is_dirty(db_type: DbType, sql: str) -> None:
    assert not leaves_clean(analyse(sql, db_type))


@pytest.mark.parametrize("sql", [catalogue._PG_TABLES, catalogue._PG_FIND,
                                 catalogue._PG_CAN_WRITE, "SHOW server_version"])
def test_our_postgresql_catalogue_reads_are_clean(sql: str) -> None:
    # /tables, /rows, /test run through the same runner: they are analysed like any
    # caller's SQL, and the analyser finds them plain reads.
    assert leaves_clean(analyse(sql, PG))


@pytest.mark.parametrize("sql", [catalogue._MY_TABLES, catalogue._MY_FIND,
                                 catalogue._MY_CAN_WRITE, "SELECT VERSION()"])
def test_our_mysql_catalogue_reads_are_clean(sql: str) -> None:
    assert leaves_clean(analyse(sql, MY))


class _FakeDriver:
    """An asyncpg-like connection (its module decides the adapter) with nothing open."""

    __module__ = "asyncpg.connection"

    def __init__(self) -> None:
        self.reported = {"TimeZone": "UTC", "server_version": "15"}
        self.in_transaction = False

    def get_settings(self) -> Any:
        return _Settings(self.reported)

    def is_in_transaction(self) -> bool:
        return self.in_transaction


class _Settings:
    def __init__(self, reported: dict[str, str]) -> None:
        self.reported = reported

    def __repr__(self) -> str:
        return f"<ConnectionSettings {self.reported!r}>"


def test_a_record_is_dirty_until_marked_clean_and_stays_dirty_once_marked() -> None:
    info: dict[str, Any] = {}
    driver = _FakeDriver()
    assert needs_reset(info, driver)  # never set up by us: unknown, so dirty
    mark_clean(info, driver)
    assert not needs_reset(info, driver)
    mark_dirty(info)
    mark_dirty(info)
    assert needs_reset(info, driver)
    mark_clean(info, driver)
    assert not needs_reset(info, driver)
    mark_dirty(None)  # an invalidated connection: nothing to track, no error


def test_an_open_transaction_or_a_reported_setting_makes_a_clean_record_dirty() -> None:
    info: dict[str, Any] = {}
    driver = _FakeDriver()
    mark_clean(info, driver)
    driver.in_transaction = True
    assert needs_reset(info, driver)
    driver.in_transaction = False
    driver.reported["TimeZone"] = "Asia/Tokyo"  # a ParameterStatus arrived
    assert needs_reset(info, driver)
