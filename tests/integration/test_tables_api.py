"""GET /tables and /tables/{table}/rows: catalogue-checked, dialect-quoted, never pasted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import quote

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


def q(db_type: str, name: str) -> str:
    """Quote an identifier for the admin's own set-up SQL."""
    if db_type == "postgresql":
        return '"' + name.replace('"', '""') + '"'
    return "`" + name.replace("`", "``") + "`"


@pytest.fixture(params=ENGINES)
async def items(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, str]]:
    """A table with 5 rows and a view on it, per engine; dropped afterwards."""
    db_type: str = request.param
    table = unique("items")
    await admin_exec(db_type, f"CREATE TABLE {table} (id int PRIMARY KEY, name varchar(20))")
    await admin_exec(db_type, f"INSERT INTO {table} VALUES (1,'a'),(2,'b'),(3,'c'),(4,'d'),(5,'e')")
    await admin_exec(db_type, f"CREATE VIEW {table}_v AS SELECT id FROM {table}")
    try:
        yield db_type, table
    finally:
        await admin_exec(db_type, f"DROP VIEW {table}_v")
        await admin_exec(db_type, f"DROP TABLE {table}")


async def test_list_tables(api: Api, items: tuple[str, str]) -> None:
    db_type, table = items
    cid = await api.register(db_type)
    response = await api.client.get(f"{BASE}/{cid}/tables")
    assert response.status_code == 200, response.text
    found = {(t["name"], t["type"]) for t in response.json()["data"]}
    assert {(table, "table"), (f"{table}_v", "view")} <= found
    schemas = {t["schema"] for t in response.json()["data"]}
    assert "pg_catalog" not in schemas and "information_schema" not in schemas
    if db_type != "postgresql":
        assert schemas == {"dbpool_test"}


async def test_read_rows_with_limit_and_offset(api: Api, items: tuple[str, str]) -> None:
    db_type, table = items
    cid = await api.register(db_type)
    response = await api.client.get(f"{BASE}/{cid}/tables/{table}/rows",
                                    params={"limit": 2, "offset": 1})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["columns"] == ["id", "name"]
    assert data["rowCount"] == 2 and {r["id"] for r in data["rows"]} <= {1, 2, 3, 4, 5}
    view = await api.client.get(f"{BASE}/{cid}/tables/{table}_v/rows")
    assert view.status_code == 200 and view.json()["data"]["rowCount"] == 5
    schema = "public" if db_type == "postgresql" else "dbpool_test"
    scoped = await api.client.get(f"{BASE}/{cid}/tables/{table}/rows", params={"schema": schema})
    assert scoped.json()["data"]["rowCount"] == 5


ATTACKS = [
    "{t}; DROP TABLE {t}",
    '{t}"--',
    "{t}`; DROP TABLE {t}; --",
    "{t}' OR '1'='1",
    "{t} WHERE 1=1",
    "ITEMS_{t}",
    "{t}\u00e9\u2603",
    "x" * 10_000,
    "{t}%00",
    "information_schema.tables",
]


async def test_table_name_attacks_are_not_found(api: Api, items: tuple[str, str]) -> None:
    db_type, table = items
    cid = await api.register(db_type)
    for attack in ATTACKS:
        name = attack.format(t=table)
        response = await api.client.get(f"{BASE}/{cid}/tables/{quote(name, safe='')}/rows")
        assert response.status_code == 404, (name, response.text)
        assert response.json()["error"]["code"] == "TABLE_NOT_FOUND"
    bad_schema = await api.client.get(f"{BASE}/{cid}/tables/{table}/rows",
                                      params={"schema": "x; DROP TABLE y"})
    assert bad_schema.status_code == 404
    assert await admin_exec(db_type, f"SELECT count(*) FROM {table}") == [(5,)]


@pytest.mark.parametrize("db_type", ENGINES)
async def test_odd_but_real_names_are_quoted(api: Api, db_type: str) -> None:
    cid = await api.register(db_type)
    name = unique('we"ird`n%me :x ✓')
    await admin_exec(db_type, f"CREATE TABLE {q(db_type, name)} (id int)")
    try:
        await admin_exec(db_type, f"INSERT INTO {q(db_type, name)} VALUES (7)")
        response = await api.client.get(f"{BASE}/{cid}/tables/{quote(name, safe='')}/rows")
        assert response.status_code == 200, response.text
        assert response.json()["data"]["rows"] == [{"id": 7}]
    finally:
        await admin_exec(db_type, f"DROP TABLE {q(db_type, name)}")
