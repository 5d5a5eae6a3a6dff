"""The OpenAPI document lists every status an operation can answer (found by schemathesis:
`/metrics` answered an undocumented 401, `/query` and `/transaction` an undocumented 413).

Checked from the schema itself, for every operation, so a new route cannot forget them."""

from __future__ import annotations

from typing import Any

import pytest

from app.main import create_app
from app.registry.crypto import generate_key
from app.settings import Settings

METHODS = {"get", "post", "patch", "put", "delete"}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    settings = Settings(
        registry_url="sqlite+aiosqlite:///:memory:",
        encryption_keys=generate_key(),
        admin_api_key="admin-key-0123456789",
    )
    return create_app(settings, configure_logs=False).openapi()


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def test_every_operation_behind_a_bearer_documents_401(spec: dict[str, Any]) -> None:
    guarded = [(m, p, op) for m, p, op in _operations(spec) if op.get("security")]
    assert any(p == "/metrics" for _, p, _ in guarded)
    missing = [f"{m} {p}" for m, p, op in guarded if "401" not in op["responses"]]
    assert missing == []


def test_every_operation_with_a_body_documents_413(spec: dict[str, Any]) -> None:
    with_body = [(m, p, op) for m, p, op in _operations(spec) if "requestBody" in op]
    assert {p for _, p, _ in with_body} >= {
        "/api/external-db-connections",
        "/api/external-db-connections/{connection_id}/query",
        "/api/external-db-connections/{connection_id}/transaction",
    }
    missing = [f"{m} {p}" for m, p, op in with_body if "413" not in op["responses"]]
    assert missing == []


def test_documented_errors_are_envelopes(spec: dict[str, Any]) -> None:
    for method, path, operation in _operations(spec):
        for status, response in operation["responses"].items():
            if status in {"401", "413"} and path.startswith(("/api", "/metrics")):
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorEnvelope"}, (method, path)
