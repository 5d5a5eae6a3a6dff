"""Turns what the soak saw into the sections of its JSON report (the bars: ``soak_bars``).

Inputs are plain data: request records ``[start, end, target, op, status, code,
envelope_ok]`` (wall clock), write records ``[target, key, "single"|"txn", status]``, the
rows the databases hold afterwards, hang-ups ``[target, marker, at]``, the chaos records,
session peaks and post-shutdown counts, and the service log.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime
from typing import Any

from bench.load import percentile
from bench.soak_chaos import OUTAGES

__all__ = [
    "DOCUMENTED_5XX",
    "ZOMBIE_WINDOW_S",
    "faults_section",
    "hangups_section",
    "outage_windows",
    "requests_section",
    "scan_log",
    "sessions_section",
    "writes_section",
]

DOCUMENTED_5XX = frozenset(
    {
        (502, "DB_AUTH_FAILED"),
        (503, "POOL_EXHAUSTED"),
        (503, "DB_UNAVAILABLE"),
        (503, "REGISTRY_UNAVAILABLE"),
        (504, "QUERY_TIMEOUT"),
    }
)
STATEMENT_GONE_GRACE_S = 2.0  # a hung-up client's statement may be seen running this long
# A statement ended by the server's own limit may still be listed this much past the limit:
# it may start a little after its client sent it (a queue at the pool's gate), and a kill
# that goes out when no statement of the pool is seen to end comes 1 s past the limit plus
# the 0.5 s hang-up grace. (The soak's long MariaDB statements are lock waits: a MariaDB
# ``SLEEP`` keeps its ``max_statement_time`` up to 4 s late, ``python -m
# bench.statement_limit``; a lock wait keeps it to the 0.01 s, as PostgreSQL does.)
_LIMIT_SLACK_S = 3.0
# The longest statement the soak sends runs 6 s (a hung-up client's): a backend left behind
# by a cut or stalled network finishes within this after the network is back.
ZOMBIE_WINDOW_S = 7.0
_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (\w+) (\S+) (.*)$")
# A hung-up client's request id starts with this (soak_load sends it as X-Request-ID); a
# traceback ending in CancelledError is how a client's cancellation surfaces otherwise (one
# that ends in TimeoutError is a time limit, not a client).
_CLIENT_GONE_ID = "request_id=soak-dc-"
_CANCELLED = re.compile(r"^(asyncio\.exceptions\.)?CancelledError\b")
_POOL_NAME = re.compile(r"\bdbpool:(\d+)\b")
# The one line the service logs for every documented 5xx answer: about the answer, not the
# client (a hung-up client's request may have failed that way before it hung up).
_DOCUMENTED_FAILURE = re.compile(
    r"request failed: (DB_UNAVAILABLE|POOL_EXHAUSTED|QUERY_TIMEOUT|DB_AUTH_FAILED"
    r"|REGISTRY_UNAVAILABLE) "
)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 1)


def requests_section(requests: list[list[Any]]) -> dict[str, Any]:
    by_code = Counter(f"{status} {code}" for _, _, _, _, status, code, _ in requests)
    by_op: dict[str, Counter[str]] = {}
    for _, _, _, op, status, code, _ in requests:
        by_op.setdefault(op, Counter())[f"{status} {code}"] += 1
    ok = sorted(t1 - t0 for t0, t1, _, _, status, _, _ in requests if 200 <= status < 300)
    bad_envelopes = [r for r in requests if r[4] != 0 and not r[6]]
    undocumented = Counter(
        f"{r[4]} {r[5]}" for r in requests if r[4] >= 500 and (r[4], r[5]) not in DOCUMENTED_5XX
    )
    return {
        "total": len(requests),
        "by_outcome": {
            "ok": len(ok),
            "error_response": sum(1 for r in requests if r[4] >= 300),
            "no_response": sum(1 for r in requests if r[4] == 0),
        },
        "by_code": dict(by_code.most_common()),
        "by_op": {op: dict(c.most_common()) for op, c in sorted(by_op.items())},
        "latency_ok": {
            "p50_ms": _ms(percentile(ok, 50)),
            "p99_ms": _ms(percentile(ok, 99)),
            "max_ms": _ms(ok[-1] if ok else None),
        },
        "envelope_violations": len(bad_envelopes),
        "envelope_violation_examples": [r[2:6] for r in bad_envelopes[:5]],
        "undocumented_5xx": dict(undocumented.most_common()),
    }


def writes_section(
    writes: list[list[Any]], held: dict[str, list[tuple[str, str, int]]]
) -> dict[str, Any]:
    """``held``: engine ("postgresql"|"mariadb") -> rows (k, grp, part) in the writes table."""
    keys = {engine: {k for k, _, _ in rows} for engine, rows in held.items()}
    groups = {engine: Counter(g for _, g, _ in rows) for engine, rows in held.items()}
    lost, refused_applied, applied_unacked, half = [], 0, 0, 0
    acked = 0
    for target, key, kind, status in writes:
        engine = "postgresql" if target.startswith("pg") else "mariadb"
        present = groups[engine][key] if kind == "txn" else int(key in keys[engine])
        expected = 2 if kind == "txn" else 1
        if kind == "txn" and present not in (0, 2):
            half += 1
        if status == 200:
            acked += 1
            if present != expected:
                lost.append([target, key, kind])
        elif present and 400 <= status < 500:
            refused_applied += 1
        elif present:
            applied_unacked += 1
    return {
        "attempted": len(writes),
        "acknowledged": acked,
        "acknowledged_missing": len(lost),
        "acknowledged_missing_examples": lost[:5],
        "half_applied_transactions": half,
        "refused_but_applied": refused_applied,
        "unacknowledged_but_applied": applied_unacked,
    }


def hangups_section(
    hangups: list[list[Any]],
    seen: dict[str, float],
    chaos: list[dict[str, Any]],
    max_connections: dict[str, int],
    time_limit_s: float,
    beside: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """Statements of hung-up clients still running after the grace. A hang-up while its
    database was cut off or stalled is counted apart: no cancel can reach the server then
    (the server's own statement timeout ends it). So is one whose pool had every connection
    held by statements of hung-up clients: a MySQL/MariaDB ``KILL`` needs a connection of
    the pool's own (the pool never opens one past its maximum), so those statements end at
    the server's own limit, ``time_limit_s``; still listed past it (plus ``_LIMIT_SLACK_S``
    for a statement that started late or a server late to keep its limit), they count. Each
    example: pool, marker, seconds listed after the hang-up, connections of the pool then
    held by hung-up clients' statements, and (``beside``, MariaDB) the pool's sessions when
    it was last seen."""
    beside = beside or {}
    outages = [
        (r["target"], r["started_at"], r.get("reachable_at") or float("inf"))
        for r in chaos
        if r["kind"] in OUTAGES
    ]

    def unreachable(target: str, at: float) -> bool:
        return any(
            t == target and start <= at + STATEMENT_GONE_GRACE_S and end >= at - 1.0
            for t, start, end in outages
        )

    def held(target: str, at: float) -> int:
        # Connections of the pool held, when this one's kill was due, by a statement whose
        # client had hung up (this one included).
        due = at + STATEMENT_GONE_GRACE_S
        return sum(1 for t, m, other in hangups
                   if t == target and other <= due and seen.get(m, -1.0) >= due)

    left, during_outage, at_limit = [], 0, 0
    for target, marker, at in hangups:
        if marker not in seen or seen[marker] - at <= STATEMENT_GONE_GRACE_S:
            continue
        if unreachable(target, at):
            during_outage += 1
        elif (held(target, at) >= max_connections.get(target, 1)
              and seen[marker] - at <= time_limit_s + _LIMIT_SLACK_S):
            at_limit += 1
        else:
            left.append([target, marker, round(seen[marker] - at, 2), held(target, at),
                         beside.get(marker, [])])
    return {
        "clients_hung_up": len(hangups),
        "statements_seen_running": sum(1 for _, m, _ in hangups if m in seen),
        "statements_still_running_after_grace": len(left),
        "still_running_while_database_unreachable": during_outage,
        "ended_at_time_limit_every_connection_hung_up": at_limit,
        "examples": left[:5],
        "grace_s": STATEMENT_GONE_GRACE_S,
        "time_limit_s": time_limit_s,
    }


def sessions_section(sessions: dict[str, Any], chaos: list[dict[str, Any]]) -> dict[str, Any]:
    """Samples above a pool's maximum, split: those within ``ZOMBIE_WINDOW_S`` after its
    network was cut or stalled or its sessions were killed by the soak (backends the service
    can no longer reach or that the server is still tearing down) and all others (a bar)."""
    windows = [
        (r["target"], r["started_at"], (r.get("reachable_at") or float("inf")) + ZOMBIE_WINDOW_S)
        for r in chaos
        if r["kind"] in OUTAGES or r["kind"] == "kill"
    ]
    after_outage: list[list[Any]] = []
    other: list[list[Any]] = []
    for sample in sessions["over_max_samples"]:
        at, target = sample[0], sample[1]
        hit = any(t == target and start <= at <= end for t, start, end in windows)
        (after_outage if hit else other).append(sample)
    peak_other: dict[str, int] = {}
    for _, target, count, _ in other:
        peak_other[target] = max(peak_other.get(target, 0), count)
    return sessions | {
        "over_max_after_outage": len(after_outage),
        "over_max_otherwise": len(other),
        "over_max_otherwise_peak": peak_other,
        "zombie_window_s": ZOMBIE_WINDOW_S,
    }


def faults_section(chaos: list[dict[str, Any]], requests: list[list[Any]]) -> dict[str, Any]:
    """Each fault with seconds from 'reachable again' to the first 2xx on its target."""
    ok_ends: dict[str, list[float]] = {}
    for _, t1, target, op, status, _, _ in requests:
        if 200 <= status < 300:
            ok_ends.setdefault(target, []).append(t1)
            if op == "registry":  # a registry read: the registry's own first success
                ok_ends.setdefault("registry", []).append(t1)
    for ends in ok_ends.values():
        ends.sort()
    for record in chaos:
        reachable = record.get("reachable_at")
        if reachable is None:
            continue
        after = [t for t in ok_ends.get(record["target"], []) if t >= reachable]
        record["seconds_to_first_success"] = round(after[0] - reachable, 3) if after else None
    return {
        "by_kind": dict(Counter(r["kind"] for r in chaos).most_common()),
        "not_applied": [r for r in chaos if "error" in r],
        "records": chaos,
    }


def _in_outage(event: list[str], outages: dict[int, list[tuple[float, float]]]) -> bool:
    """The event names a pool (``dbpool:<id>``) whose network was cut or stalled then."""
    head = _LOG_LINE.match(event[0])
    pool = _POOL_NAME.search(event[0])
    if head is None or pool is None:
        return False
    at = datetime.strptime(event[0][:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()  # local time
    return any(start <= at <= end for start, end in outages.get(int(pool[1]), []))


def outage_windows(
    chaos: list[dict[str, Any]], ids: dict[str, int]
) -> dict[int, list[tuple[float, float]]]:
    """Connection id -> (start, end + grace) of every cut or stall of its network."""
    windows: dict[int, list[tuple[float, float]]] = {}
    for r in chaos:
        if r["kind"] in OUTAGES and r["target"] in ids:
            end = (r.get("reachable_at") or float("inf")) + STATEMENT_GONE_GRACE_S
            windows.setdefault(ids[r["target"]], []).append((r["started_at"] - 1.0, end))
    return windows


def scan_log(
    text: str, outages: dict[int, list[tuple[float, float]]] | None = None
) -> dict[str, Any]:
    """ERROR/CRITICAL lines and tracebacks, grouped; those about a client that went away.

    A hung-up client's request that also met a cut or stalled network (its pool's name in
    the line, within ``outages``) is counted under the network fault, not the client."""
    outages = outages or {}
    events: list[list[str]] = []
    current: list[str] | None = None
    for line in text.splitlines():
        if _LOG_LINE.match(line):
            current = [line]
            events.append(current)
        elif current is not None:
            current.append(line)
        else:
            current = [line]
            events.append(current)
    flagged = []
    for event in events:
        head = _LOG_LINE.match(event[0])
        level = head[1] if head else ""
        traceback = any(line.startswith("Traceback") for line in event)
        if level in {"ERROR", "CRITICAL"} or traceback:
            flagged.append((event, traceback))
    signatures: Counter[str] = Counter()
    client_gone = network = 0
    for event, traceback in flagged:
        text_of = "\n".join(event)
        head = _LOG_LINE.match(event[0])
        message = f"{head[2]} {head[3]}" if head else event[0]
        if traceback:
            message += " | " + event[-1].strip()
        message = re.sub(r"request_id=\S+|0x[0-9a-f]+|\d+", "#", message)[:240]
        signatures[message] += 1
        documented = _DOCUMENTED_FAILURE.search(event[0]) is not None
        cancelled = traceback and _CANCELLED.match(event[-1].strip()) is not None
        hung_up = _CLIENT_GONE_ID in text_of and not _in_outage(event, outages)
        client_gone += not documented and (hung_up or cancelled)
        network += not documented and not cancelled and _in_outage(event, outages)
    return {
        "error_events": len(flagged),
        "tracebacks": sum(1 for _, tb in flagged if tb),
        "client_gone_events": client_gone,
        "network_fault_events": network,
        "top": dict(signatures.most_common(12)),
    }
