"""The soak's bars (the issue's "done means"), evaluated on its report, and the summary."""

from __future__ import annotations

from typing import Any

from bench.soak_chaos import OUTAGES
from bench.soak_report import ZOMBIE_WINDOW_S

__all__ = ["RECOVERY_BAR_S", "bars", "build_report", "summary"]

RECOVERY_BAR_S = 1.5


def build_report(**parts: Any) -> dict[str, Any]:
    """The JSON report: everything handed in, with the bars evaluated."""
    report = dict(parts)
    report["bars"] = bars(report)
    report["passed"] = all(bar["met"] is not False for bar in report["bars"])
    return report


def _recovery_bar(name: str, faults: list[dict[str, Any]]) -> dict[str, Any]:
    figures = [f.get("seconds_to_ok") for f in faults]
    if not figures:
        return {"bar": name, "met": None, "measured": "not in this run's schedule"}
    worst = None if None in figures else max(f for f in figures if f is not None)
    met = worst is not None and worst <= RECOVERY_BAR_S
    shown = "never within 30 s" if worst is None else f"worst {worst} s"
    return {"bar": name, "met": met, "measured": f"{shown} over {len(figures)} faults",
            "seconds_to_ok": figures}  # fmt: skip


def bars(report: dict[str, Any]) -> list[dict[str, Any]]:
    req, writes, log = report["requests"], report["writes"], report["log"]
    sessions, hang = report["sessions"], report["hangups"]
    outages = [r for r in report["faults"]["records"] if r["kind"] in OUTAGES]
    cuts10 = [r for r in outages if r["kind"] == "cut" and 10 <= r["duration_s"] < 60]
    cuts60 = [r for r in outages if r["kind"] == "cut" and r["duration_s"] >= 60]
    others = [r for r in outages if r not in cuts10 and r not in cuts60]
    over = sessions["over_max_otherwise_peak"]
    left = sum(sessions["after_shutdown"].values())
    return [
        {"bar": "zero envelope violations", "met": req["envelope_violations"] == 0,
         "measured": req["envelope_violations"]},
        {"bar": "no ERROR/traceback in the log for a client that went away",
         "met": log["client_gone_events"] == 0, "measured": log["client_gone_events"]},
        {"bar": "every hung-up client's statement gone from the server (within "
                f"{hang['grace_s']:g} s; by its {hang['time_limit_s']:g} s limit when every "
                "connection of its pool held one)",
         "met": hang["statements_still_running_after_grace"] == 0,
         "measured": hang["statements_still_running_after_grace"]},
        {"bar": "no 5xx other than the documented 502/503/504",
         "met": not req["undocumented_5xx"], "measured": req["undocumented_5xx"]},
        {"bar": "database sessions never above a pool's maximum (outside the "
                f"{ZOMBIE_WINDOW_S:g} s after its network was cut or stalled or its sessions "
                "killed)", "met": not over,
         "measured": {"over": over, "peak_incl_after_outage": sessions["peak"],
                      "samples_over_after_outage": sessions["over_max_after_outage"]}},
        {"bar": "no session left after shutdown", "met": left == 0,
         "measured": sessions["after_shutdown"]},
        {"bar": "zero acknowledged writes lost, no transaction half-applied",
         "met": writes["acknowledged_missing"] == 0 and writes["half_applied_transactions"] == 0,
         "measured": {"lost": writes["acknowledged_missing"],
                      "half_applied": writes["half_applied_transactions"]}},
        _recovery_bar("pool ok within 1.5 s of its database back, after a 10 s cut", cuts10),
        _recovery_bar("pool ok within 1.5 s of its database back, after a 60 s cut", cuts60),
        _recovery_bar("pool ok within 1.5 s of its database back, other cuts and stalls", others),
    ]  # fmt: skip


def summary(report: dict[str, Any]) -> str:
    req = report["requests"]
    lines = [
        f"soak: {report['meta']['seconds']} s, {req['total']} requests "
        f"({req['by_outcome']['ok']} ok), p50 {req['latency_ok']['p50_ms']} ms, "
        f"p99 {req['latency_ok']['p99_ms']} ms; faults {report['faults']['by_kind']}",
    ]
    for bar in report["bars"]:
        word = {True: "MET ", False: "MISS", None: "n/a "}[bar["met"]]
        lines.append(f"  {word} {bar['bar']}: {bar['measured']}")
    lines.append("PASSED" if report["passed"] else "FAILED: a bar was missed")
    return "\n".join(lines)
