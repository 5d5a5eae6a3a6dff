"""schemathesis hooks (``SCHEMATHESIS_HOOKS=tests.e2e.fuzz.hooks``): keep every generated
registration on the local test databases.

Applied to each request just before it is sent, whatever the phase generated it: a
well-formed ``host`` becomes ``127.0.0.1`` and a valid ``port`` the test server of the
registration's engine, so no fuzzed request can make the service connect anywhere else. A
malformed host or port is left alone: the service must refuse it (422). Path ids are folded
onto the few connections the test registered first, so queries and status reach real pools.
"""

from __future__ import annotations

from typing import Any

import schemathesis

from app.api.schemas.connections import is_valid_host

LOOPBACK = "127.0.0.1"
PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306}
KNOWN_IDS = 4  # registered by the test before the run: ids 1..KNOWN_IDS (see test_fuzz_openapi)


def _confine(body: dict[str, Any]) -> None:
    host = body.get("host")
    if isinstance(host, str) and is_valid_host(host):
        body["host"] = LOOPBACK
    port = body.get("port")
    if isinstance(port, int) and not isinstance(port, bool) and 1 <= port <= 65535:
        engine = body.get("dbType")
        body["port"] = PORTS.get(engine, 5432) if isinstance(engine, str) else 5432


def _fold_id(path_parameters: dict[str, Any]) -> None:
    value = path_parameters.get("connection_id")
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**62:
        path_parameters["connection_id"] = value % (KNOWN_IDS + 1) + 1


@schemathesis.hook
def before_call(context: Any, case: Any, **kwargs: Any) -> None:
    if isinstance(case.body, dict):
        _confine(case.body)
    if case.path_parameters:
        _fold_id(case.path_parameters)
