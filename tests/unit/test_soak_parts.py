"""The soak's own logic, on made-up data: its schedule, envelope check, write accounting,
log scan and bars (the soak itself runs in tests/e2e/test_soak.py)."""

from __future__ import annotations

from datetime import datetime
from itertools import pairwise
from typing import Any

from bench.soak_bars import bars
from bench.soak_chaos import OUTAGES, schedule
from bench.soak_load import envelope_ok, outcome_code
from bench.soak_report import hangups_section, scan_log, sessions_section, writes_section


def test_a_short_ci_run_has_a_60_s_cut_and_10_s_cuts_and_no_overlap_per_target() -> None:
    faults = schedule(84, registry_faults=True)
    cuts = sorted(f.duration for f in faults if f.kind == "cut")
    assert 60.0 in cuts and cuts.count(10.0) >= 2
    assert {f.kind for f in faults} >= {"kill", "burst", "patch", "delay", "deactivate",
                                        "registry_cut", "stall"}  # fmt: skip
    assert all(f.at + f.duration <= 84 - 10 for f in faults)  # room to watch recovery
    by_target: dict[str, list[tuple[float, float]]] = {}
    for f in faults:
        if f.kind in OUTAGES | {"delay"}:
            by_target.setdefault(f.target, []).append((f.at, f.at + f.duration))
    for spans in by_target.values():
        spans.sort()
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in pairwise(spans))


def test_long_runs_repeat_the_cycle_and_short_ones_scale_down() -> None:
    assert len(schedule(600, registry_faults=False)) > 5 * len(schedule(84, False))
    assert not any(f.kind == "registry_cut" for f in schedule(600, registry_faults=False))
    short = schedule(30, registry_faults=True)
    assert max(f.at + f.duration for f in short) < 30
    assert min(f.duration for f in short if f.duration) >= 1.0


def test_envelope_shapes() -> None:
    ok = b'{"success": true, "data": {"rows": []}, "message": "0 rows"}'
    error = (b'{"success": false, "error": {"code": "DB_UNAVAILABLE", "message": "down",'
             b' "details": {}}, "requestId": "r1"}')  # fmt: skip
    assert envelope_ok(200, ok) and envelope_ok(503, error)
    assert not envelope_ok(503, ok)  # a success body on an error status
    assert not envelope_ok(200, error)
    assert not envelope_ok(500, b"Internal Server Error")
    assert not envelope_ok(404, b'{"detail": "Not Found"}')  # FastAPI's own shape
    assert outcome_code(503, error) == "DB_UNAVAILABLE" and outcome_code(200, ok) == "OK"
    assert outcome_code(502, b"<html>") == "HTTP_502"


def test_writes_acknowledged_missing_and_half_applied_transactions() -> None:
    writes = [
        ["pg-direct", "a", "single", 200],  # acked, present
        ["pg-direct", "b", "single", 200],  # acked, missing: lost
        ["my-direct", "t1", "txn", 200],  # acked, both rows
        ["my-direct", "t2", "txn", 503],  # not acked, one row: half-applied
        ["my-direct", "c", "single", 409],  # refused, yet present
        ["pg-flaky", "d", "single", 504],  # unknown outcome, present
    ]
    held = {
        "postgresql": [("a", "a", 0), ("d", "d", 0)],
        "mariadb": [("t1/1", "t1", 1), ("t1/2", "t1", 2), ("t2/1", "t2", 1), ("c", "c", 0)],
    }
    section = writes_section(writes, held)
    assert section["acknowledged"] == 3
    assert section["acknowledged_missing"] == 1
    assert section["acknowledged_missing_examples"] == [["pg-direct", "b", "single"]]
    assert section["half_applied_transactions"] == 1
    assert section["refused_but_applied"] == 1
    assert section["unacknowledged_but_applied"] == 2  # d, and t2's one row


LOG = """\
2026-12-01 06:10:24,420 INFO app.api.routes.queries client disconnected request_id=soak-dc-p0-1
2026-12-01 06:10:25,000 ERROR app.api.errors request failed: DB_UNAVAILABLE down request_id=x1
2026-12-01 06:10:25,100 ERROR app.api.errors request failed: QUERY_TIMEOUT t request_id=soak-dc-p0-2
2026-12-01 06:10:26,000 ERROR sqlalchemy.pool Exception during reset or similar request_id=x2
Traceback (most recent call last):
  File "x.py", line 1, in f
asyncio.exceptions.CancelledError
2026-12-01 06:10:26,500 ERROR sqlalchemy.pool Exception during reset or similar request_id=x4
Traceback (most recent call last):
asyncio.exceptions.CancelledError
The above exception was the direct cause of the following exception:
Traceback (most recent call last):
TimeoutError
2026-12-01 06:10:27,000 ERROR app.api.middleware unhandled error on GET /api/x/7
Traceback (most recent call last):
  File "y.py", line 2, in g
ConnectionResetError: [Errno 104] Connection reset by peer request_id=x3
"""


def test_log_scan_counts_errors_tracebacks_and_client_gone_events() -> None:
    scan = scan_log(LOG)
    assert scan["error_events"] == 5
    assert scan["tracebacks"] == 3
    # The CancelledError traceback; not the documented 5xx line of a hung-up client, nor a
    # time limit whose traceback passes through a CancelledError.
    assert scan["client_gone_events"] == 1
    assert any("ConnectionResetError" in key for key in scan["top"])


NETWORK_LOG = """\
2026-12-01 06:52:53,410 ERROR sqlalchemy.pool.dbpool:5 Exception terminating connection x
Traceback (most recent call last):
RuntimeError: unable to perform operation on <TCPTransport closed=True> request_id=soak-dc-p2-5
"""


def test_a_hung_up_clients_error_during_its_pools_outage_counts_for_the_network() -> None:
    at = datetime.strptime("2026-12-01 06:52:53,410", "%Y-%m-%d %H:%M:%S,%f").timestamp()
    assert scan_log(NETWORK_LOG)["client_gone_events"] == 1  # no outage known: the client's
    during = scan_log(NETWORK_LOG, {5: [(at - 2, at + 1)]})
    assert (during["client_gone_events"], during["network_fault_events"]) == (0, 1)
    other_pool = scan_log(NETWORK_LOG, {6: [(at - 2, at + 1)]})
    assert other_pool["client_gone_events"] == 1


def _report(**overrides: Any) -> dict[str, Any]:
    sessions = sessions_section(
        {"peak": {"p": 3}, "max": {"p": 3}, "after_shutdown": {"p": 0},
         "over_max_samples": [[100.0, "p", 4, {}]]},
        [{"kind": "cut", "target": "p", "started_at": 90.0, "reachable_at": 95.0,
          "duration_s": 10.0, "seconds_to_ok": 0.4}],
    )  # fmt: skip
    report: dict[str, Any] = {
        "requests": {"envelope_violations": 0, "undocumented_5xx": {}},
        "writes": {"acknowledged_missing": 0, "half_applied_transactions": 0},
        "log": {"client_gone_events": 0},
        "hangups": {"statements_still_running_after_grace": 0, "grace_s": 2.0,
                    "time_limit_s": 5.0},
        "sessions": sessions,
        "faults": {"records": [{"kind": "cut", "duration_s": 10.0, "seconds_to_ok": 0.4}]},
    }
    return report | overrides


def test_bars_met_missed_and_not_covered() -> None:
    met = {bar["bar"]: bar["met"] for bar in bars(_report())}
    assert sum(1 for v in met.values() if v is True) == 8
    assert [k for k, v in met.items() if v is None] == [
        "pool ok within 1.5 s of its database back, after a 60 s cut",
        "pool ok within 1.5 s of its database back, other cuts and stalls",
    ]
    slow = _report(faults={"records": [{"kind": "cut", "duration_s": 60, "seconds_to_ok": 2.0},
                                       {"kind": "stall", "duration_s": 5, "seconds_to_ok": None}]})
    missed = [bar["bar"] for bar in bars(slow) if bar["met"] is False]  # fmt: skip
    assert missed == [
        "pool ok within 1.5 s of its database back, after a 60 s cut",
        "pool ok within 1.5 s of its database back, other cuts and stalls",
    ]


def test_sessions_over_the_maximum_outside_an_outage_window_miss_the_bar() -> None:
    sessions = sessions_section(
        {"peak": {"p": 4}, "max": {"p": 3}, "after_shutdown": {"p": 0},
         "over_max_samples": [[100.0, "p", 4, {}], [200.0, "p", 5, {}]]},
        [{"kind": "stall", "target": "p", "started_at": 90.0, "reachable_at": 95.0}],
    )  # fmt: skip
    assert sessions["over_max_after_outage"] == 1
    assert sessions["over_max_otherwise_peak"] == {"p": 5}
    bar = next(b for b in bars(_report(sessions=sessions)) if "sessions never" in b["bar"])
    assert bar["met"] is False


def test_hung_up_statements_still_running_apart_from_unreachable_ones() -> None:
    hangups = [["p", "m1", 100.0], ["p", "m2", 200.0], ["q", "m3", 300.0]]
    seen = {"m1": 105.0, "m2": 201.0, "m3": 304.0}
    chaos = [{"kind": "cut", "target": "p", "started_at": 99.0, "reachable_at": 101.0}]
    section = hangups_section(hangups, seen, chaos, {"p": 2, "q": 2}, 5.0)
    assert section["statements_still_running_after_grace"] == 1  # m3: no outage on q
    assert section["still_running_while_database_unreachable"] == 1  # m1
    assert section["examples"] == [["q", "m3", 4.0, 1, []]]  # 1 connection held by a hang-up


def test_every_connection_hung_up_may_run_to_the_time_limit_and_no_longer() -> None:
    # Pool q of 2: m1 and m2 hang up together and hold both connections, so their kills
    # have no connection to go on; they may run to the server's limit (5 s) and its slack
    # (3 s: a late start, a server late to keep its limit), not past it.
    hangups = [["q", "m1", 100.0], ["q", "m2", 100.1], ["q", "m3", 200.0],
               ["q", "m4", 300.0], ["q", "m5", 300.0]]  # fmt: skip
    seen = {"m1": 104.6, "m2": 104.8, "m3": 204.6, "m4": 307.5, "m5": 309.0}
    section = hangups_section(hangups, seen, [], {"q": 2}, 5.0)
    assert section["ended_at_time_limit_every_connection_hung_up"] == 3  # m1, m2, m4
    # m3 had a free connection for its kill; m5 ran past the limit and its slack.
    assert section["statements_still_running_after_grace"] == 2
    assert [e[1] for e in section["examples"]] == ["m3", "m5"]
