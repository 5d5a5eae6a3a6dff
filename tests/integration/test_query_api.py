"""POST /query and /transaction end to end on the real servers (MariaDB as mysql and mariadb)."""

from __future__ import annotations

import asyncio
import os
import time

import psutil
import pytest

from tests.support.query import (
    BASE,
    ENGINES,
    Api,
    admin_exec,
    api,
    query_registry,
    unique,
)

__all__ = ["api", "query_registry"]  # fixtures

pytestmark = [pytest.mark.postgresql, pytest.mark.mariadb]

BIG = {
    "postgresql": "SELECT generate_series(1, 2000000) AS n",
    "mysql": "SELECT seq AS n FROM seq_1_to_2000000",
    "mariadb": "SELECT seq AS n FROM seq_1_to_2000000",
}


def error_of(response: object) -> dict[str, object]:
    body = response.json()  # type: ignore[attr-defined]
    assert body["success"] is False, body
    assert body["requestId"]
    error: dict[str, object] = body["error"]
    return error


@pytest.mark.parametrize("db_type", ENGINES)
async def test_named_and_positional_params_and_row_formats(api: Api, db_type: str) -> None:
    cid = await api.register(db_type)
    rows = await api.rows(cid, "SELECT :a AS a, :b AS b, :a AS again", params={"a": 7, "b": "x"})
    assert rows == [{"a": 7 if db_type != "postgresql" else "7", "b": "x",
                     "again": 7 if db_type != "postgresql" else "7"}]
    positional = "SELECT $1::int + $2::int AS s" if db_type == "postgresql" else \
        "SELECT %s + %s AS s"
    assert await api.rows(cid, positional, params=[2, 3]) == [{"s": 5}]
    response = await api.query(cid, "SELECT 1 AS one, 'a%' AS two", rowFormat="array")
    data = response.json()["data"]
    assert data["columns"] == ["one", "two"] and data["rows"] == [[1, "a%"]]
    assert data["rowCount"] == 1 and data["truncated"] is False and data["durationMs"] >= 0


async def test_postgres_named_param_with_cast(api: Api) -> None:
    cid = await api.register("postgresql")
    rows = await api.rows(cid, "SELECT :n::int + 1 AS n, '1'::int AS c", params={"n": "41"})
    assert rows == [{"n": 42, "c": 1}]


@pytest.mark.parametrize("db_type", ENGINES)
async def test_write_reports_affected_rows_and_commits(api: Api, db_type: str) -> None:
    cid = await api.register(db_type)
    table = unique("qw")
    await admin_exec(db_type, f"CREATE TABLE {table} (id int PRIMARY KEY, v text)")
    try:
        response = await api.query(cid, f"INSERT INTO {table} VALUES (:i, 'a'), (:j, 'b')",
                                   params={"i": 1, "j": 2})
        assert response.status_code == 200, response.text
        assert response.json()["data"]["rowCount"] == 2
        assert response.json()["data"]["columns"] == []
        updated = await api.query(cid, f"UPDATE {table} SET v = 'c'")
        assert updated.json()["data"]["rowCount"] == 2
        assert await admin_exec(db_type, f"SELECT count(*) FROM {table}") == [(2,)]
    finally:
        await admin_exec(db_type, f"DROP TABLE {table}")


@pytest.mark.parametrize("db_type", ENGINES)
async def test_syntax_error_is_query_error_with_codes(api: Api, db_type: str) -> None:
    cid = await api.register(db_type)
    response = await api.query(cid, "SELEC 1")
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "QUERY_ERROR"
    details = error["details"]
    assert isinstance(details, dict)
    if db_type == "postgresql":
        assert details["sqlstate"] == "42601"
    else:
        assert details["errno"] == 1064 and details["sqlstate"] == "42000"
    assert "SELEC" in str(details["databaseMessage"])
    assert await api.rows(cid, "SELECT 1 AS ok") == [{"ok": 1}]  # the pool keeps serving


@pytest.mark.parametrize("db_type", ENGINES)
async def test_missing_parameter_is_a_validation_error(api: Api, db_type: str) -> None:
    cid = await api.register(db_type)
    response = await api.query(cid, "SELECT :a AS a, :b AS b", params={"a": 1})
    assert response.status_code == 422
    details = error_of(response)["details"]
    assert details["field"] == "params" and details["missing"] == ["b"]
    assert [e["loc"] for e in details["errors"]] == [["body", "params"]]


@pytest.mark.parametrize("db_type", ENGINES)
async def test_max_rows_truncates_without_reading_the_rest(api: Api, db_type: str) -> None:
    cid = await api.register(db_type)
    process = psutil.Process(os.getpid())
    rss_before = process.memory_info().rss
    started = time.monotonic()
    response = await api.query(cid, BIG[db_type], maxRows=10)
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["truncated"] is True and data["rowCount"] == 10
    assert [row["n"] for row in data["rows"]] == list(range(1, 11))
    assert process.memory_info().rss - rss_before < 100 * 2**20
    assert elapsed < 5.0, elapsed  # draining 2M rows takes several seconds on MariaDB
    assert await api.rows(cid, "SELECT 2 AS two") == [{"two": 2}]
    snap = api.snapshot(cid)
    assert snap.checked_out == 0 and snap.open <= 3


@pytest.mark.parametrize("db_type", ENGINES)
async def test_max_rows_is_capped_by_settings(api: Api, db_type: str) -> None:
    cid = await api.register(db_type)
    response = await api.query(cid, BIG[db_type], maxRows=10**9)
    data = response.json()["data"]
    assert data["rowCount"] == 10000 and data["truncated"] is True  # DBPOOL_MAX_ROWS default


@pytest.mark.parametrize("db_type", ENGINES)
async def test_transaction_commits_together(api: Api, db_type: str) -> None:
    cid = await api.register(db_type)
    table = unique("qt")
    await admin_exec(db_type, f"CREATE TABLE {table} (id int PRIMARY KEY)")
    try:
        response = await api.transaction(cid, [
            {"sql": f"INSERT INTO {table} VALUES (:id)", "params": {"id": 1}},
            {"sql": f"INSERT INTO {table} VALUES (2), (3)"},
            {"sql": f"SELECT id FROM {table} ORDER BY id"},
        ], isolationLevel="REPEATABLE READ")
        assert response.status_code == 200, response.text
        results = response.json()["data"]["results"]
        assert [r["rowCount"] for r in results] == [1, 2, 3]
        assert results[2]["rows"] == [{"id": 1}, {"id": 2}, {"id": 3}]
        # Committed: visible from a separate connection.
        assert await admin_exec(db_type, f"SELECT count(*) FROM {table}") == [(3,)]
    finally:
        await admin_exec(db_type, f"DROP TABLE {table}")


@pytest.mark.parametrize("db_type", ENGINES)
async def test_transaction_failure_rolls_back_everything(api: Api, db_type: str) -> None:
    cid = await api.register(db_type)
    table = unique("qr")
    await admin_exec(db_type, f"CREATE TABLE {table} (id int PRIMARY KEY)")
    try:
        response = await api.transaction(cid, [
            {"sql": f"INSERT INTO {table} VALUES (1)"},
            {"sql": f"INSERT INTO {table} VALUES (2)"},
            {"sql": f"INSERT INTO {table} VALUES (1)"},  # duplicate key
            {"sql": f"INSERT INTO {table} VALUES (4)"},
        ], isolationLevel="SERIALIZABLE")
        assert response.status_code == 400, response.text
        error = error_of(response)
        assert error["code"] == "QUERY_ERROR"
        details = error["details"]
        assert isinstance(details, dict) and details["statementIndex"] == 2
        assert await admin_exec(db_type, f"SELECT count(*) FROM {table}") == [(0,)]
        assert await api.rows(cid, f"SELECT count(*) AS c FROM {table}") == [{"c": 0}]
    finally:
        await admin_exec(db_type, f"DROP TABLE {table}")


async def test_read_uncommitted_is_refused_on_postgres(api: Api) -> None:
    cid = await api.register("postgresql")
    response = await api.transaction(cid, [{"sql": "SELECT 1"}],
                                     isolationLevel="READ UNCOMMITTED")
    assert response.status_code == 422 and error_of(response)["code"] == "VALIDATION_ERROR"


@pytest.mark.parametrize("db_type", ["mysql", "mariadb"])
async def test_read_uncommitted_works_on_mysql(api: Api, db_type: str) -> None:
    cid = await api.register(db_type)
    response = await api.transaction(
        cid, [{"sql": "SELECT @@tx_isolation AS iso"}], isolationLevel="READ UNCOMMITTED")
    assert response.status_code == 200, response.text
    # The level applies to the transaction, not the session variable: the call succeeded.
    assert response.json()["data"]["results"][0]["rowCount"] == 1


@pytest.mark.parametrize("db_type", ENGINES)
async def test_read_only_connection_refuses_writes(api: Api, db_type: str) -> None:
    cid = await api.register(db_type, readOnly=True)
    table = unique("qro")
    await admin_exec(db_type, f"CREATE TABLE {table} (id int)")
    try:
        response = await api.query(cid, f"INSERT INTO {table} VALUES (1)")
        assert response.status_code == 403, response.text
        assert error_of(response)["code"] == "READ_ONLY"
        in_tx = await api.transaction(cid, [{"sql": f"INSERT INTO {table} VALUES (2)"}])
        assert in_tx.status_code == 403 and error_of(in_tx)["details"] == {
            **error_of(in_tx)["details"], "statementIndex": 0}  # type: ignore[dict-item]
        assert await admin_exec(db_type, f"SELECT count(*) FROM {table}") == [(0,)]
        assert await api.rows(cid, f"SELECT count(*) AS c FROM {table}") == [{"c": 0}]
    finally:
        await admin_exec(db_type, f"DROP TABLE {table}")


async def test_inactive_connection_is_409(api: Api) -> None:
    cid = await api.register("postgresql", isActive=False)
    response = await api.query(cid, "SELECT 1")
    assert response.status_code == 409 and error_of(response)["code"] == "CONNECTION_INACTIVE"


async def test_unknown_connection_is_404(api: Api) -> None:
    response = await api.query(987654321, "SELECT 1")
    assert response.status_code == 404 and error_of(response)["code"] == "CONNECTION_NOT_FOUND"


@pytest.mark.parametrize("db_type", ENGINES)
async def test_connection_test_endpoint(api: Api, db_type: str) -> None:
    cid = await api.register(db_type)
    response = await api.client.post(f"{BASE}/{cid}/test")
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["ok"] is True and data["latencyMs"] > 0
    assert ("MariaDB" in data["serverVersion"]) == (db_type != "postgresql")


async def test_wrong_password_is_db_auth_failed_without_leaking(api: Api) -> None:
    secret = "Wrong-Pw-" + unique("s")
    cid = await api.register("mariadb", password=secret)
    response = await api.client.post(f"{BASE}/{cid}/test")
    assert response.status_code == 502, response.text
    assert error_of(response)["code"] == "DB_AUTH_FAILED"
    assert secret not in response.text


@pytest.mark.parametrize("db_type", ENGINES)
async def test_each_request_holds_one_connection(api: Api, db_type: str) -> None:
    cid = await api.register(db_type, maxConnections=2)
    sleep = "SELECT pg_sleep(0.3)" if db_type == "postgresql" else "SELECT SLEEP(0.3)"
    responses = await asyncio.gather(*(api.query(cid, sleep) for _ in range(6)))
    assert [r.status_code for r in responses] == [200] * 6
    snap = api.snapshot(cid)
    assert snap.checked_out == 0 and snap.open <= 2
    assert snap.stats.acquisitions == 6
