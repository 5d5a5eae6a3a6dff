"""encoding: database values -> JSON-ready values, and JSON parameters -> asyncpg's types."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal

import asyncpg
import pytest
from pydantic_core import to_json

from app.errors import ResultTooLarge
from app.pools.budget import ResultBudget
from app.pools.encoding import coerce_pg_params, encode_rows, encode_value, iso_duration


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1, 1), (True, True), ("s", "s"), (None, None), (1.5, 1.5),
        (float("nan"), "NaN"), (float("inf"), "Infinity"), (float("-inf"), "-Infinity"),
        (Decimal("12345678901234567890.000000001"), "12345678901234567890.000000001"),
        (dt.date(2024, 2, 29), "2024-02-29"),
        (dt.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=dt.UTC), "2024-01-02T03:04:05.000006+00:00"),
        (dt.time(13, 14, 15), "13:14:15"),
        (dt.timedelta(days=1, hours=2, seconds=3.5), "P1DT2H3.5S"),
        (b"\xde\xad\xbe\xef", "3q2+7w=="), (bytearray(b"\x00"), "AA=="),
        (memoryview(b"ab"), "YWI="),
        (uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
        ([1, Decimal("2.5"), None], [1, "2.5", None]), ((1, 2), [1, 2]),
        ({"a": dt.date(2024, 1, 1)}, {"a": "2024-01-01"}),
        ({"b", "a"}, ["a", "b"]),
        (asyncpg.Range(1, 5), "[1,5)"), (asyncpg.Range(empty=True), "empty"),
        (asyncpg.Range(None, 3, upper_inc=True), "(,3]"),
        (object.__new__(type("Thing", (), {"__str__": lambda self: "thing"})), "thing"),
    ],
)
def test_encode_value(value: object, expected: object) -> None:
    assert encode_value(value) == expected
    json.dumps(encode_value(value))  # always serialisable


@pytest.mark.parametrize(
    ("delta", "expected"),
    [
        (dt.timedelta(0), "PT0S"), (dt.timedelta(seconds=-30), "-PT30S"),
        (dt.timedelta(days=2), "P2D"), (dt.timedelta(minutes=1, microseconds=10), "PT1M0.00001S"),
        (dt.timedelta(days=-1, hours=23), "-PT1H"),
    ],
)
def test_iso_duration(delta: dt.timedelta, expected: str) -> None:
    assert iso_duration(delta) == expected


def test_rows_pick_an_encoder_per_column_from_the_first_non_null_value() -> None:
    rows = [(None, 1, None), (Decimal("1.10"), 2, b"x"), (Decimal("3"), 3, None)]
    assert encode_rows(["d", "i", "b"], rows) == [
        {"d": None, "i": 1, "b": None},
        {"d": "1.10", "i": 2, "b": "eA=="},
        {"d": "3", "i": 3, "b": None},
    ]
    assert encode_rows(["d", "i", "b"], rows, row_format="array")[1] == ["1.10", 2, "eA=="]


def test_a_stray_type_in_a_column_still_encodes() -> None:
    rows = [(Decimal("1"),), (1.5,), (dt.date(2024, 1, 1),)]
    assert encode_rows(["x"], rows, row_format="array") == [["1"], [1.5], ["2024-01-01"]]


def test_a_float_column_is_encoded_only_where_it_needs_to_be() -> None:
    finite = [(1.5,), (None,), (-2.25,)]
    assert encode_rows(["f"], finite, row_format="array") == [[1.5], [None], [-2.25]]
    late = [(1.5,), (2.5,), (float("nan"),), (float("-inf"),), (Decimal("3"),)]
    assert encode_rows(["f"], late, row_format="array") == [
        [1.5], [2.5], ["NaN"], ["-Infinity"], ["3"]]


def test_json_columns_are_decoded_and_bad_json_is_kept_as_text() -> None:
    rows = [('{"a": [1, null]}',), (None,), ("not json",)]
    encoded = encode_rows(["j"], rows, json_columns=frozenset({0}), row_format="array")
    assert encoded == [[{"a": [1, None]}], [None], ["not json"]]


def test_empty_result() -> None:
    assert encode_rows(["a"], []) == []


def test_coerce_pg_params() -> None:
    values = ["2024-01-02", "2024-01-02T03:04:05+00:00", str(uuid.UUID(int=5)), 1.1,
              {"a": 1}, 7, True, "x", None, "not-a-date"]
    types = ["date", "timestamptz", "uuid", "numeric", "jsonb", "text", "text", "text",
             "int4", "date"]
    assert coerce_pg_params(values, types) == [
        dt.date(2024, 1, 2), dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        uuid.UUID(int=5), Decimal("1.1"), '{"a": 1}', "7", "true", "x", None, "not-a-date",
    ]


def test_budget_keeps_the_json_it_measured_and_stops_at_the_caps() -> None:
    columns = ["id", "name"]
    rows = [(i, f"n{i}") for i in range(600)]  # three slices
    budget = ResultBudget(1 << 20, keep_json=True)
    encoded = encode_rows(columns, rows, budget=budget)
    assert json.loads(budget.rows_json()) == encoded == json.loads(to_json(encoded))
    assert json.loads(ResultBudget(1 << 20, keep_json=True).rows_json()) == []
    small = ResultBudget(2048)
    with pytest.raises(ResultTooLarge) as too_big:
        encode_rows(columns, rows, budget=small)
    assert too_big.value.details == {"maxBytes": 2048}
    counted = ResultBudget(1 << 20, max_rows=700)
    encode_rows(columns, rows, budget=counted)
    with pytest.raises(ResultTooLarge) as too_many:
        encode_rows(columns, rows, budget=counted)
    assert too_many.value.details == {"maxRows": 700}
