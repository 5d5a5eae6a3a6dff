"""The direct path validates a ``/query`` body in one pass from the JSON bytes
(``model_validate_json``); FastAPI decodes with ``json.loads`` and validates the objects.
Whatever the first accepts, the second accepts with the same values, or the direct path
would answer differently from FastAPI (it falls back to FastAPI when it refuses)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from app.api.schemas.queries import QueryRequest

_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.text(), st.sampled_from(["5", "1.5", "object", "array", "auto", "replica", ""]),
)
_VALUES = st.recursive(_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=4)),
    max_leaves=12)
_FIELDS = st.sampled_from(["sql", "params", "maxRows", "max_rows", "timeoutSeconds",
                           "rowFormat", "target", "other"])


def _outcome(validate: Any, document: Any) -> tuple[str, str]:
    try:
        return "ok", repr(validate(document).model_dump())
    except (ValidationError, ValueError) as exc:
        return "error", type(exc).__name__


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(_FIELDS, _VALUES, max_size=6), st.booleans())
def test_what_the_direct_path_accepts_fastapi_accepts_alike(doc: dict[str, Any],
                                                            ascii_only: bool) -> None:
    body = json.dumps(doc, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    direct = _outcome(QueryRequest.model_validate_json, body)
    if direct[0] == "ok":
        assert _outcome(QueryRequest.model_validate, json.loads(body)) == direct


def test_edge_documents() -> None:
    for body in (b'{"sql": "x", "params": {"a": NaN, "b": 1e400, "c": -0.0}}',
                 b'{"sql": "x", "sql": "y", "maxRows": true}',
                 b'{"sql": "x", "params": {"a": 123456789012345678901234567890}}',
                 b'{"sql": "x", "params": {"a": 0.30000000000000004}}'):
        direct = _outcome(QueryRequest.model_validate_json, body)
        assert direct[0] == "ok"
        assert _outcome(QueryRequest.model_validate, json.loads(body)) == direct
