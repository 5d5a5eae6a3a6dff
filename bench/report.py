"""Turn raw figures into the printed table, the service/baseline ratios and the goals."""

from __future__ import annotations

from typing import Any

__all__ = ["goals", "ratios", "render"]

_RPS_GOAL, _RPS_STRETCH, _P99_GOAL = 0.75, 1.0, 1.5
_SQLALCHEMY_GOAL = 1.2  # service req/s against the hand-written SQLAlchemy service
_GOAL_CASES = ("point", "rows100")


def _row(rows: list[dict[str, Any]], target: str, engine: str, case: str, c: int) -> Any:
    for r in rows:
        if (r["target"], r["engine"], r["case"], r["concurrency"]) == (target, engine, case, c):
            return r
    return None


def _div(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 3)


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (engine, case, concurrency), for each service variant: service / raw-driver
    baseline (``rps_ratio``, ``p99_ratio``) and service / hand-written SQLAlchemy service
    (``rps_ratio_sqlalchemy``, ``p99_ratio_sqlalchemy``; None when it was not measured)."""
    out = []
    for r in rows:
        if not r["target"].startswith("service") or "rps" not in r:
            continue
        key = (r["engine"], r["case"], r["concurrency"])
        base = _row(rows, f"baseline-{r['engine']}", *key)
        if base is None or "rps" not in base:
            continue
        sqla = _row(rows, f"sqlalchemy-{r['engine']}", *key) or {}
        out.append(
            {
                "service": r["target"],
                "engine": r["engine"],
                "case": r["case"],
                "concurrency": r["concurrency"],
                "rps_ratio": _div(r["rps"], base["rps"]),
                "p99_ratio": _div(r["p99_ms"], base["p99_ms"]),
                "rps_ratio_sqlalchemy": _div(r["rps"], sqla.get("rps")),
                "p99_ratio_sqlalchemy": _div(r["p99_ms"], sqla.get("p99_ms")),
            }
        )
    return out


def _goal(
    name: str, target: str, measured: Any, met: bool | None, note: str = ""
) -> dict[str, Any]:
    return {"goal": name, "target": target, "measured": measured, "met": met, "note": note}


def _throughput_goals(ratio_rows: list[dict[str, Any]], top_c: int) -> list[dict[str, Any]]:
    out = []
    for engine in ("postgresql", "mariadb"):
        for case in _GOAL_CASES:
            r = next(
                (
                    x
                    for x in ratio_rows
                    if (x["service"], x["engine"], x["case"], x["concurrency"])
                    == ("service", engine, case, top_c)
                ),
                None,
            )
            name = (
                f"{engine} {case} c={top_c}: req/s >= 1.2x SQLAlchemy and >= 0.75x raw,"
                " p99 <= 1.5x raw"
            )
            target = "1.2x / 0.75x / 1.5x"
            if r is None or r["rps_ratio"] is None or r["p99_ratio"] is None:
                out.append(_goal(name, target, None, None, "not measured"))
                continue
            sqla = r["rps_ratio_sqlalchemy"]
            missed = [
                label
                for label, ok in (
                    ("vs SQLAlchemy", sqla is not None and sqla >= _SQLALCHEMY_GOAL),
                    ("vs raw", r["rps_ratio"] >= _RPS_GOAL),
                    ("p99", r["p99_ratio"] <= _P99_GOAL),
                )
                if not ok
            ]
            stretch = "stretch (>=1.0x raw) met" if r["rps_ratio"] >= _RPS_STRETCH else ""
            note = "; ".join(x for x in (missed and f"missed: {', '.join(missed)}", stretch) if x)
            measured = (
                f"{sqla}x SQLAlchemy, {r['rps_ratio']}x raw req/s, {r['p99_ratio']}x raw p99"
            )
            out.append(_goal(name, target, measured, not missed, note))
    return out


def _extra_goals(extras: dict[str, Any]) -> list[dict[str, Any]]:
    scale = extras.get("scale") or {}
    out = []
    status, metrics = scale.get("pool_status"), scale.get("metrics")
    live = (scale.get("live_pools") or {}).get("live_pools")
    p99 = status and status["p99_ms"]
    out.append(
        _goal(
            f"pool-status p99 with {live} live pools",
            "< 20 ms",
            p99,
            None if p99 is None else p99 < 20,
        )
    )
    p99 = metrics and metrics["p99_ms"]
    out.append(
        _goal(
            f"/metrics scrape p99 with {live} live pools",
            "< 100 ms",
            p99,
            None if p99 is None else p99 < 100,
        )
    )
    history = scale.get("history") or {}
    per_pool = history.get("bytes_per_pool")
    out.append(
        _goal(
            f"pool history memory per pool ({history.get('pools')} live pools)",
            "<= 16 KiB",
            per_pool,
            None if per_pool is None else per_pool <= 16 * 1024,
            f"{history.get('window_s')} s at one sample per {history.get('interval_s')} s",
        )
    )
    for engine, figures in (scale.get("memory") or {}).items():
        if isinstance(figures, dict):
            kib = figures["kib_per_pool"]
            out.append(
                _goal(f"memory per live {engine} pool (2 open)", "<= 150 KiB", kib, kib <= 150)
            )
    circuit = extras.get("circuit_open") or {}
    p99 = (circuit.get("latency") or {}).get("p99_ms")
    only_unavailable = set(circuit.get("codes") or {}) == {"DB_UNAVAILABLE"}
    out.append(
        _goal(
            "circuit open: DB_UNAVAILABLE p99",
            "< 5 ms",
            p99,
            None if p99 is None else (p99 < 5 and only_unavailable),
            f"codes {circuit.get('codes')}",
        )
    )
    rec = extras.get("recovery") or {}
    seconds, backoff = rec.get("seconds_to_first_success"), rec.get("retry_after_before_restore_s")
    bound = None if backoff is None else round(1.0 + backoff, 3)
    met = None if seconds is None or bound is None else seconds <= bound
    out.append(
        _goal(
            "database back: first success",
            "<= 1 s + current backoff",
            seconds,
            met,
            f"bound {bound} s (Retry-After before restore: {backoff})",
        )
    )
    return out


def goals(ratio_rows: list[dict[str, Any]], extras: dict[str, Any], top_c: int) -> list[Any]:
    """Every goal of the issue with its measured figure; ``met`` None when not measured."""
    return _throughput_goals(ratio_rows, top_c) + _extra_goals(extras)


def _fmt(value: Any, width: int) -> str:
    if value is None:
        return "-".rjust(width)
    if isinstance(value, float):
        return f"{value:,.1f}".rjust(width) if value >= 100 else f"{value:.2f}".rjust(width)
    return str(value).rjust(width)


def render(result: dict[str, Any]) -> str:
    """The human-readable report: throughput table (with CPU per request: the server's and
    the database side's, in µs), ratios, goals, errors."""
    meta = result["meta"]
    lines = [
        f"load generator: {meta['load_generator']}; mode {meta['mode']}",
        "",
        f"{'target':<22}{'engine':<11}{'case':<9}{'c':>4}{'req/s':>10}"
        f"{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'cpu us':>8}{'db us':>8}",
    ]
    for r in result["throughput"]:
        lines.append(
            f"{r['target']:<22}{r['engine']:<11}{r['case']:<9}{r['concurrency']:>4}"
            + _fmt(r.get("rps"), 10)
            + _fmt(r.get("p50_ms"), 9)
            + _fmt(r.get("p99_ms"), 9)
            + _fmt(r.get("errors", r.get("error") and "fail"), 8)
            + _fmt(r.get("server_cpu_us"), 8)
            + _fmt(r.get("db_cpu_us"), 8)
        )
    lines += [
        "(db us: PostgreSQL, the backends of that server's connections;"
        " MariaDB, the whole mariadbd process)",
        "",
        f"{'service / ...':<22}{'engine':<11}{'case':<9}{'c':>4}"
        f"{'raw rps':>9}{'raw p99':>9}{'sqla rps':>9}{'sqla p99':>9}",
    ]
    for x in result["ratios"]:
        lines.append(
            f"{x['service']:<22}{x['engine']:<11}{x['case']:<9}{x['concurrency']:>4}"
            + _fmt(x["rps_ratio"], 9)
            + _fmt(x["p99_ratio"], 9)
            + _fmt(x["rps_ratio_sqlalchemy"], 9)
            + _fmt(x["p99_ratio_sqlalchemy"], 9)
        )
    lines += ["", "goals:"]
    for g in result["goals"]:
        mark = {True: "MET ", False: "MISS", None: "n/a "}[g["met"]]
        lines.append(f"  [{mark}] {g['goal']}: {g['measured']} (target {g['target']}) {g['note']}")
    if result["errors"]:
        lines += ["", "errors:"] + [f"  {e}" for e in result["errors"]]
    return "\n".join(lines)
