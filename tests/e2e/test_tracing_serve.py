"""``dbpool serve`` with tracing asked for by ``OTEL_*`` alone: it says so at start, its log
lines carry the trace ids, and the exporter receives the request's spans."""

from __future__ import annotations

import json
import re
import secrets

import pytest

from tests.e2e.conftest import StartServer
from tests.support import dbs

API = "/api/external-db-connections"


@pytest.mark.postgresql
def test_otel_variables_turn_tracing_on_and_logs_carry_the_trace_id(
    start_server: StartServer,
) -> None:
    server = start_server(env={"OTEL_TRACES_EXPORTER": "console",
                               "OTEL_SERVICE_NAME": "dbpool-e2e"})
    with server.client() as http:
        body = {"name": f"otel-{secrets.token_hex(4)}", "dbType": "postgresql",
                "host": dbs.PG_HOST, "port": dbs.PG_PORT, "database": dbs.PG_DATABASE,
                "username": dbs.PG_USER, "password": dbs.PG_PASSWORD}
        cid = http.post(API, json=body).json()["data"]["id"]
        failed = http.post(f"{API}/{cid}/query", json={"sql": "SELEC oops"})
        assert failed.json()["error"]["code"] == "QUERY_ERROR"
    server.stop()  # the exporter flushes on shutdown
    assert server.stopped_cleanly(), server.log()[-2000:]
    log = server.log()
    assert "tracing on: spans go to console" in log
    match = re.search(r"query failed .*trace_id=([0-9a-f]{32})", log)
    assert match, log[-3000:]
    trace_id = match.group(1)
    # The console exporter prints each span as a JSON object.
    spans = [json.loads(m) for m in re.findall(r"^\{\n.*?^\}$", log, re.S | re.M)]
    mine = [s for s in spans if s["context"]["trace_id"] == f"0x{trace_id}"]
    assert {"query", "pool wait", "connect", "reset"} <= {s["name"] for s in mine}
    assert all(s["resource"]["attributes"]["service.name"] == "dbpool-e2e" for s in mine)
    assert dbs.PG_PASSWORD not in log
