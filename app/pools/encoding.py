"""Database values <-> JSON.

Rows out (``encode_rows``), one encoder per column, chosen once per result from the
column's type (JSON columns) or its first non-null value, so the hot loop does no
``isinstance`` chain per cell:

=======================================  ==============================================
int, bool, str, None                     as they are
float                                    number; NaN / inf as "NaN" / "Infinity" / "-Infinity"
Decimal                                  string (no precision lost)
date, time, datetime                     ISO 8601 (``isoformat()``)
timedelta (PG interval, MySQL TIME)      ISO 8601 duration, e.g. "P1DT2H3M4.5S", "-PT30S"
bytes, bytearray, memoryview             base64 string
UUID                                     string
JSON / JSONB columns (str on the wire)   decoded JSON (left a string if it is not JSON)
MariaDB JSON (LONGTEXT on the wire)      string: the protocol does not mark it as JSON
list, tuple (PG arrays)                  list, each element encoded as above
dict                                     object, each value encoded as above
set (MySQL SET)                          sorted list of strings
PG ranges                                PostgreSQL's text form, e.g. "[1,5)"
anything else (inet, geometry, money)    ``str(value)``
=======================================  ==============================================

Size: with a ``budget.ResultBudget``, rows are encoded in slices and each slice is charged
to it, so a result past the response's cap stops at the first slice beyond it.

Parameters in (``coerce_pg_params``): asyncpg wants Python objects of the exact
parameter type, so ISO strings become dates, UUIDs, Decimals and dicts/lists become
JSON text where PostgreSQL expects those types.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import uuid
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any, Literal

import asyncpg

from app.pools.budget import ResultBudget

__all__ = [
    "ColumnEncoder",
    "RowFormat",
    "coerce_pg_params",
    "encode_rows",
    "encode_value",
    "iso_duration",
]

RowFormat = Literal["object", "array"]
ColumnEncoder = Callable[[Any], Any]

_PASS_THROUGH = (int, bool, str, type(None))
# Rows encoded (and measured) at a time: a result past the cap stops within one slice.
_SLICE = 256


def encode_rows(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    json_columns: frozenset[int] = frozenset(),
    row_format: RowFormat = "object",
    budget: ResultBudget | None = None,
) -> list[Any]:
    """Encode ``rows`` for JSON as objects keyed by column, or as arrays; with a ``budget``,
    slice by slice, each charged to it (``ResultTooLarge`` when it is spent)."""
    encoders = _column_encoders(len(columns), rows, json_columns)
    if budget is None:
        return _encode(columns, rows, encoders, row_format)
    encoded: list[Any] = []
    for start in range(0, len(rows), _SLICE):
        part = _encode(columns, rows[start:start + _SLICE], encoders, row_format)
        budget.charge(part)
        encoded += part
    return encoded


def _encode(columns: Sequence[str], rows: Sequence[Sequence[Any]],
            encoders: dict[int, ColumnEncoder], row_format: RowFormat) -> list[Any]:
    if encoders:
        rows = [_apply(row, encoders) for row in rows]
    if row_format == "array":
        return [list(row) for row in rows]
    names = list(columns)
    # strict=False: every row of one result has the columns' width, and the check costs
    # a fifth of the encoding time of a 100-row read.
    return [dict(zip(names, row, strict=False)) for row in rows]


def _apply(row: Sequence[Any], encoders: dict[int, ColumnEncoder]) -> list[Any]:
    values = list(row)
    for index, encode in encoders.items():
        values[index] = encode(values[index])
    return values


def _column_encoders(
    width: int, rows: Sequence[Sequence[Any]], json_columns: frozenset[int]
) -> dict[int, ColumnEncoder]:
    """Only the columns that need work get an encoder; the rest are copied as they are."""
    encoders: dict[int, ColumnEncoder] = {}
    if not rows:
        return encoders
    first = rows[0]
    for index in range(width):
        sample = first[index]
        if sample is None:  # rare: look further down the column
            sample = next((row[index] for row in rows if row[index] is not None), None)
        if index in json_columns and isinstance(sample, str | bytes):
            encoders[index] = _nullable(_decode_json)
        elif type(sample) is float:
            # Finite floats are JSON numbers as they are: an encoder only for a column that
            # holds NaN, an infinity or a stray type (one scan instead of a call per cell).
            if not all(_finite(row[index]) for row in rows):
                encoders[index] = _typed(float, _float)
        elif sample is not None and not isinstance(sample, _PASS_THROUGH):
            encoders[index] = _typed(type(sample), _encoder_for(sample))
    return encoders


def _nullable(encode: ColumnEncoder) -> ColumnEncoder:
    return lambda value: None if value is None else encode(value)


def _typed(expected: type, encode: ColumnEncoder) -> ColumnEncoder:
    """The column's encoder, with the general one as a net for a stray type."""

    def run(value: Any) -> Any:
        if type(value) is expected:
            return encode(value)
        return encode_value(value)

    return run


def encode_value(value: Any) -> Any:
    """One value, type found by inspection (the slow path: nested and stray values)."""
    if isinstance(value, _PASS_THROUGH):
        return value
    return _encoder_for(value)(value)


def _encoder_for(sample: Any) -> ColumnEncoder:
    for kind, encoder in _ENCODERS:
        if isinstance(sample, kind):
            return encoder
    return str


def _finite(value: Any) -> bool:
    """A finite float or NULL: nothing to encode (anything else goes through the encoder)."""
    return value is None or (type(value) is float and math.isfinite(value))


def _float(value: float) -> float | str:
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _base64(value: bytes | bytearray | memoryview) -> str:
    return base64.b64encode(value).decode("ascii")


def _isoformat(value: dt.date | dt.time) -> str:
    return value.isoformat()


def iso_duration(value: dt.timedelta) -> str:
    """``timedelta`` as an ISO 8601 duration: days, hours, minutes, (fractional) seconds."""
    sign = "-" if value < dt.timedelta(0) else ""
    value = abs(value)
    hours, rest = divmod(value.seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    time = ""
    if hours:
        time += f"{hours}H"
    if minutes:
        time += f"{minutes}M"
    if seconds or value.microseconds:
        frac = f".{value.microseconds:06d}".rstrip("0") if value.microseconds else ""
        time += f"{seconds}{frac}S"
    days = f"{value.days}D" if value.days else ""
    if not days and not time:
        return "PT0S"
    return f"{sign}P{days}" + (f"T{time}" if time else "")


def _sequence(value: Sequence[Any]) -> list[Any]:
    return [encode_value(item) for item in value]


def _mapping(value: dict[Any, Any]) -> dict[str, Any]:
    return {str(key): encode_value(item) for key, item in value.items()}


def _set(value: set[Any] | frozenset[Any]) -> list[Any]:
    return sorted(str(item) for item in value)


def _range(value: asyncpg.Range) -> str:
    """PostgreSQL's own text form: ``[1,5)``, ``(,2024-01-01]``, ``empty``."""
    if value.isempty:
        return "empty"
    lower = "" if value.lower is None else encode_value(value.lower)
    upper = "" if value.upper is None else encode_value(value.upper)
    opening = "[" if value.lower_inc else "("
    closing = "]" if value.upper_inc else ")"
    return f"{opening}{lower},{upper}{closing}"


def _decode_json(value: str | bytes) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value if isinstance(value, str) else _base64(value)


# Order matters only where types nest: bool before int is not needed (bool passes
# through), datetime is a date, so both share one encoder.
_ENCODERS: tuple[tuple[type | tuple[type, ...], ColumnEncoder], ...] = (
    (float, _float),
    (Decimal, str),
    ((dt.date, dt.time), _isoformat),
    (dt.timedelta, iso_duration),
    ((bytes, bytearray, memoryview), _base64),
    (uuid.UUID, str),
    ((list, tuple), _sequence),
    (dict, _mapping),
    ((set, frozenset), _set),
    (asyncpg.Range, _range),
)


# ---- parameters in (PostgreSQL) ------------------------------------------------------

_PG_FROM_STR: dict[str, Callable[[str], Any]] = {
    "date": dt.date.fromisoformat,
    "time": dt.time.fromisoformat,
    "timetz": dt.time.fromisoformat,
    "timestamp": dt.datetime.fromisoformat,
    "timestamptz": dt.datetime.fromisoformat,
    "uuid": uuid.UUID,
    "numeric": Decimal,
    "bytea": base64.b64decode,
    "int2": int,
    "int4": int,
    "int8": int,
    "float4": float,
    "float8": float,
}


_PG_TEXT = frozenset({"text", "varchar", "bpchar", "name", "unknown"})


def coerce_pg_params(values: Sequence[Any], type_names: Sequence[str]) -> list[Any]:
    """JSON values -> the Python objects asyncpg needs for each parameter's type.

    Values of any other combination are passed on unchanged (asyncpg reports misfits).
    """
    return [_coerce_pg(value, name) for value, name in zip(values, type_names, strict=False)]


def _coerce_pg(value: Any, type_name: str) -> Any:
    if value is None:
        return None
    if type_name in ("json", "jsonb"):
        return json.dumps(value)
    if type_name == "numeric" and isinstance(value, float):
        return Decimal(str(value))
    if type_name in _PG_TEXT and isinstance(value, int | float):
        return str(value).lower() if isinstance(value, bool) else str(value)
    if isinstance(value, str) and type_name in _PG_FROM_STR:
        try:
            return _PG_FROM_STR[type_name](value)
        except ValueError:
            return value  # let asyncpg produce its own, parameter-free complaint
    return value
