"""Passwords are scrubbed from connection-time errors only: a caller's own query error keeps
the database's words, so it cannot be used to test guesses of the stored password."""

from __future__ import annotations

import secrets

import pytest

from tests.support import dbs
from tests.support.query import Api, api, query_registry

__all__ = ["api", "query_registry"]  # fixtures

pytestmark = [pytest.mark.postgresql, pytest.mark.mariadb]


def _guess_sql(db_type: str, text: str) -> str:
    if db_type == "postgresql":
        return f"SELECT '{text}'::int"
    return f"SELECT * FROM `{text}`"  # "Table 'dbpool_test.<text>' doesn't exist"


@pytest.mark.parametrize("db_type", ["postgresql", "mariadb"])
async def test_query_errors_are_not_a_password_oracle(api: Api, db_type: str) -> None:
    password = f"pw{secrets.token_hex(8)}"
    user = f"dbp_or_{secrets.token_hex(4)}"
    if db_type == "mariadb":
        dbs.create_mysql_user(user, password)
    try:
        extra = {"username": user} if db_type == "mariadb" else {}
        cid = await api.register(db_type, password=password, **extra)
        messages = {}
        for guess in (password, f"pw{secrets.token_hex(8)}"):
            response = await api.query(cid, _guess_sql(db_type, guess))
            assert response.status_code == 400, response.text
            error = response.json()["error"]
            assert error["code"] == "QUERY_ERROR"
            messages[guess] = error["details"]["databaseMessage"]
        # The right guess reads exactly like a wrong one: the caller's own text comes back.
        for guess, message in messages.items():
            assert guess in message and "[hidden]" not in message, message
    finally:
        if db_type == "mariadb":
            dbs.drop_mysql_user(user)


async def test_connect_errors_never_show_the_password(api: Api) -> None:
    # PostgreSQL names the missing database in its connect-time error: a database named
    # like the password puts the password into the driver's message.
    password = f"pw{secrets.token_hex(8)}"
    pg = await api.register("postgresql", password=password, database=password)
    refused = await api.query(pg, "SELECT 1")
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "DB_UNAVAILABLE"
    assert password not in refused.text and "[hidden]" in refused.text
    wrong = f"pw{secrets.token_hex(8)}"
    maria = await api.register("mariadb", password=wrong)
    denied = await api.query(maria, "SELECT 1")
    assert denied.json()["error"]["code"] == "DB_AUTH_FAILED", denied.text
    assert wrong not in denied.text
