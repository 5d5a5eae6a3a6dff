"""Property: any string bound as ``:v`` comes back byte for byte, on the real servers,
whatever literals and comments stand around the placeholder (hypothesis, bounded)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.query import Api, api, query_registry

__all__ = ["api", "query_registry"]  # fixtures

pytestmark = [pytest.mark.postgresql, pytest.mark.mariadb]

# Text PostgreSQL can store (no NUL) and JSON can carry (no surrogates).
PG_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"),
                  max_size=40)
MY_TEXT = st.text(st.characters(codec="utf-8"), max_size=40)
# Quotes, backslashes, percent signs, colons, comment and statement markers: the usual
# suspects, mixed into any text.
SUSPECTS = st.lists(st.sampled_from(["'", '"', "`", "\\", "%", "%s", ":v", "::", ";", "--",
                                     "#", "/*", "*/", "$$", "?", "\n", "é", "😀"]),
                    max_size=8).map("".join)

AROUND = {
    "postgresql": [
        "SELECT :v AS v, 0 AS k",
        "SELECT /* :x */ :v AS v, ':v' AS k -- :y\n",
        "SELECT $$ :v $$ AS k, :v::text AS v",
        "SELECT E'\\' :v' AS k, \"v\" FROM (SELECT :v AS \"v\") q",
        "SELECT '{\"a\":1}'::jsonb AS k, :v AS v;",
    ],
    "mysql": [
        "SELECT :v AS v, 0 AS k",
        "SELECT /* :x */ :v AS v, ':v' AS k # :y\n",
        "SELECT \"a :v\" AS k, :v AS v -- :z",
        "SELECT '50%' AS k, `v` FROM (SELECT :v AS `v`) q",
        "SELECT 'it\\'s :v' AS k, /*! :v AS v */;",
    ],
}
EXPECTED_K = {
    "SELECT :v AS v, 0 AS k": 0,
    "SELECT /* :x */ :v AS v, ':v' AS k -- :y\n": ":v",
    "SELECT /* :x */ :v AS v, ':v' AS k # :y\n": ":v",
    "SELECT $$ :v $$ AS k, :v::text AS v": " :v ",
    "SELECT E'\\' :v' AS k, \"v\" FROM (SELECT :v AS \"v\") q": "' :v",
    "SELECT '{\"a\":1}'::jsonb AS k, :v AS v;": {"a": 1},
    "SELECT \"a :v\" AS k, :v AS v -- :z": "a :v",
    "SELECT '50%' AS k, `v` FROM (SELECT :v AS `v`) q": "50%",
    "SELECT 'it\\'s :v' AS k, /*! :v AS v */;": "it's :v",
}


async def _roundtrip(api: Api, cid: int, engine: str, value: str) -> None:
    for sql in AROUND[engine]:
        rows = await api.rows(cid, sql, params={"v": value})
        assert rows == [{"v": value, "k": EXPECTED_K[sql]}], (sql, value)


_REGISTERED: dict[tuple[int, str], int] = {}


async def _connection(api: Api, db_type: str) -> int:
    """One registration per app and engine, shared by the examples of one test."""
    key = (id(api.app), db_type)
    if key not in _REGISTERED:
        _REGISTERED[key] = await api.register(db_type)
    return _REGISTERED[key]


_SETTINGS = settings(max_examples=30, deadline=None, database=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])


@_SETTINGS
@given(value=st.one_of(PG_TEXT, SUSPECTS, st.tuples(PG_TEXT, SUSPECTS).map("".join)))
async def test_any_string_comes_back_from_postgres(api: Api, value: str) -> None:
    await _roundtrip(api, await _connection(api, "postgresql"), "postgresql", value)


@_SETTINGS
@given(value=st.one_of(MY_TEXT, SUSPECTS, st.tuples(MY_TEXT, SUSPECTS).map("".join)))
async def test_any_string_comes_back_from_mariadb(api: Api, value: str) -> None:
    await _roundtrip(api, await _connection(api, "mariadb"), "mysql", value)
