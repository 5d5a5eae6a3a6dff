"""OpenTelemetry spans of real requests on PostgreSQL and MariaDB, caught by the SDK's
in-memory exporter: names, parent/child structure, semantic-convention attributes, error
status, and that no span holds a parameter value, a literal, a password or a user name."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode, format_span_id, format_trace_id

from app.main import create_app
from app.registry.migrations import upgrade_to_head
from app.tracing import OtelTracing
from tests.support import dbs
from tests.support.api import ADMIN, BASE, make_settings
from tests.support.server import free_port

pytestmark = [pytest.mark.postgresql, pytest.mark.mariadb]

PG_PASSWORD = dbs.PG_PASSWORD
QUERY_ROUTE = f"POST {BASE}/{{connection_id}}/query"
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@dataclass
class Traced:
    http: httpx.AsyncClient
    exporter: InMemorySpanExporter
    pg: int
    my: int
    secrets: list[str]

    def trace(self, response: httpx.Response) -> list[ReadableSpan]:
        """Every finished span of the trace that served ``response``."""
        server = [s for s in self.exporter.get_finished_spans() if s.kind is SpanKind.SERVER
                  and s.attributes and s.attributes.get("dbpool.request_id")
                  == response.headers["x-request-id"]]
        assert len(server) == 1, [s.name for s in self.exporter.get_finished_spans()]
        trace_id = server[0].context.trace_id
        return [s for s in self.exporter.get_finished_spans() if s.context.trace_id == trace_id]


@pytest.fixture
def my_account() -> Iterator[tuple[str, str]]:
    user, password = f"dbp_tr_{secrets.token_hex(4)}", f"my-pw-{secrets.token_hex(8)}"
    dbs.create_mysql_user(user, password)
    yield user, password
    dbs.drop_mysql_user(user)


@pytest.fixture
async def traced(tmp_path: Path, my_account: tuple[str, str]) -> AsyncIterator[Traced]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'registry.sqlite3'}"
    await upgrade_to_head(url)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = create_app(make_settings(url), configure_logs=False, tracing=OtelTracing(provider))
    user, password = my_account
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver",
                                     headers=ADMIN) as http:
            pg = await register(http, dbType="postgresql", host=dbs.PG_HOST, port=dbs.PG_PORT,
                                database=dbs.PG_DATABASE, username=dbs.PG_USER,
                                password=PG_PASSWORD)
            my = await register(http, dbType="mariadb", host=dbs.MY_HOST, port=dbs.MY_PORT,
                                database=dbs.MY_DATABASE, username=user, password=password)
            yield Traced(http, exporter, pg, my, [PG_PASSWORD, password, user])
    assert dbs.my_count(user) == 0, "the MariaDB pool outlived the app"


async def register(http: httpx.AsyncClient, **fields: Any) -> int:
    body = {"name": f"trace-{secrets.token_hex(4)}", "maxConnections": 2,
            "connectionTimeout": 2} | fields
    response = await http.post(BASE, json=body)
    assert response.status_code == 201, response.text
    return int(response.json()["data"]["id"])


def every_text(span: ReadableSpan) -> str:
    """The span's name, attributes, events and status as one string, to search for secrets."""
    parts = [span.name, repr(dict(span.attributes or {})), repr(span.status.description)]
    for event in span.events:
        parts += [event.name, repr(dict(event.attributes or {}))]
    for link in span.links:
        parts.append(repr(dict(link.attributes or {})))
    return "\n".join(parts)


def by_name(spans: list[ReadableSpan]) -> dict[str, ReadableSpan]:
    names = [s.name for s in spans]
    assert len(names) == len(set(names)), names
    return {s.name: s for s in spans}


@pytest.mark.parametrize("engine", ["postgresql", "mariadb"])
async def test_a_query_is_one_server_span_with_pool_children(traced: Traced, engine: str) -> None:
    cid = traced.pg if engine == "postgresql" else traced.my
    value = f"param-value-{secrets.token_hex(6)}"
    response = await traced.http.post(
        f"{BASE}/{cid}/query", json={"sql": "SELECT :v AS v", "params": {"v": value}},
        headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"})
    assert response.status_code == 200, response.text
    spans = by_name(traced.trace(response))
    assert set(spans) == {QUERY_ROUTE, "pool wait", "connect", "query", "reset"}

    server = spans[QUERY_ROUTE]
    # The caller's traceparent makes our request span its child.
    assert format_trace_id(server.context.trace_id) == CALLER_TRACE
    assert server.parent is not None and format_span_id(server.parent.span_id) == CALLER_SPAN
    assert server.attributes is not None
    assert server.attributes["http.request.method"] == "POST"
    assert server.attributes["http.route"] == f"{BASE}/{{connection_id}}/query"
    assert server.attributes["http.response.status_code"] == 200
    assert server.status.status_code is StatusCode.UNSET

    for name in ("pool wait", "connect", "query", "reset"):
        child = spans[name]
        assert child.parent is not None and child.parent.span_id == server.context.span_id, name
        assert child.kind is SpanKind.CLIENT
        assert dict(child.attributes or {}).items() >= {
            "db.system": engine, "db.namespace": dbs.MY_DATABASE if engine == "mariadb"
            else dbs.PG_DATABASE, "dbpool.connection.id": cid,
            "db.client.connection.pool.name": f"dbpool:{cid}",
        }.items(), name
    assert spans["query"].attributes is not None
    assert spans["query"].attributes["dbpool.statement.kind"] == "read"
    assert spans["query"].attributes["dbpool.operation"] == "query"
    # In order: wait, connect, query, reset.
    starts = [spans[n].start_time or 0 for n in ("pool wait", "connect", "query", "reset")]
    assert starts == sorted(starts)
    for span in spans.values():
        assert value not in every_text(span)


async def test_a_transaction_records_each_statement_kind(traced: Traced) -> None:
    statements = [{"sql": "SELECT :a AS a", "params": {"a": "tx-value-1"}},
                  {"sql": "SELECT 'tx-literal-2' AS b"}]
    response = await traced.http.post(f"{BASE}/{traced.pg}/transaction",
                                      json={"statements": statements})
    assert response.status_code == 200, response.text
    spans = by_name(traced.trace(response))
    attributes = dict(spans["transaction"].attributes or {})
    assert attributes["dbpool.statement.kinds"] == ("read", "read")
    assert attributes["db.operation.batch.size"] == 2
    for span in spans.values():
        assert "tx-value-1" not in every_text(span) and "tx-literal-2" not in every_text(span)


async def test_failures_set_the_status_and_the_code_never_the_message(traced: Traced) -> None:
    value = f"not-an-int-{secrets.token_hex(6)}"
    # PostgreSQL's error message quotes the value: it must not reach any span.
    response = await traced.http.post(
        f"{BASE}/{traced.pg}/query",
        json={"sql": "SELECT CAST(CAST(:v AS text) AS integer)", "params": {"v": value}})
    assert response.status_code == 400 and value in response.text
    spans = by_name(traced.trace(response))
    query = spans["query"]
    assert query.status.status_code is StatusCode.ERROR
    assert (query.attributes or {})["error.type"] == "QUERY_ERROR"
    assert spans[QUERY_ROUTE].status.status_code is StatusCode.UNSET  # a 4xx is the caller's
    for span in spans.values():
        assert value not in every_text(span)

    dead = await register(traced.http, dbType="postgresql", host="127.0.0.1", port=free_port(),
                          database="nothing", username="nobody", password="dead-pw-12345")
    response = await traced.http.post(f"{BASE}/{dead}/query", json={"sql": "SELECT 1"})
    assert response.status_code == 503, response.text
    spans = by_name(traced.trace(response))
    assert set(spans) == {QUERY_ROUTE, "pool wait", "connect"}
    assert spans["connect"].status.status_code is StatusCode.ERROR
    # The driver's own failure, by class (the request's answer carries our code).
    assert (spans["connect"].attributes or {})["error.type"] == "ConnectionRefusedError"
    assert spans[QUERY_ROUTE].status.status_code is StatusCode.ERROR
    assert (spans[QUERY_ROUTE].attributes or {})["error.type"] == "503"
    assert "dead-pw-12345" not in every_text(spans["connect"])


async def test_no_span_ever_holds_a_password_or_a_user(traced: Traced) -> None:
    for cid in (traced.pg, traced.my):
        await traced.http.post(f"{BASE}/{cid}/test")
        await traced.http.get(f"{BASE}/{cid}/tables")
        await traced.http.post(f"{BASE}/{cid}/query", json={"sql": "SELECT 1"})
    await traced.http.get(f"{BASE}/pool-status")
    spans = traced.exporter.get_finished_spans()
    assert {"query", "connect", "reset"} <= {s.name for s in spans}
    operations = {(s.attributes or {}).get("dbpool.operation") for s in spans}
    assert {"test", "tables", "query"} <= operations
    for span in spans:
        text = every_text(span)
        for secret in traced.secrets:
            assert secret not in text, (span.name, secret)


async def test_a_request_the_caller_did_not_sample_makes_no_span(traced: Traced) -> None:
    before = len(traced.exporter.get_finished_spans())
    response = await traced.http.post(
        f"{BASE}/{traced.pg}/query", json={"sql": "SELECT 1"},
        headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-00"})  # flags 00: not sampled
    assert response.status_code == 200, response.text
    assert len(traced.exporter.get_finished_spans()) == before
