"""The benchmark still works: ``python -m bench.run --tiny`` end to end, in seconds.

Only the exit status and the JSON's shape are checked — never a timing figure.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.postgresql, pytest.mark.mariadb, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
TARGETS = {
    "constant",
    "baseline-postgresql",
    "baseline-mariadb",
    "sqlalchemy-postgresql",
    "sqlalchemy-mariadb",
    "service",
}
ROW_KEYS = {"target", "engine", "case", "concurrency", "rps", "p50_ms", "p99_ms", "errors"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, str, dict[str, Any]]:
    out = tmp_path_factory.mktemp("bench") / "tiny.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.run", "--tiny", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    result = json.loads(out.read_text()) if out.exists() else {}
    return proc.returncode, proc.stdout + proc.stderr, result


def test_exits_zero_and_writes_json(tiny_run: tuple[int, str, dict[str, Any]]) -> None:
    code, output, result = tiny_run
    assert code == 0, output[-3000:]
    assert set(result) == {"meta", "throughput", "ratios", "extras", "goals", "errors"}
    assert result["errors"] == []
    assert result["meta"]["mode"] == "tiny"
    assert result["meta"]["load_generator"].startswith(("wrk", "python"))


def test_every_target_measured_at_tiny_concurrency(
    tiny_run: tuple[int, str, dict[str, Any]],
) -> None:
    rows = tiny_run[2]["throughput"]
    assert {r["target"] for r in rows} == TARGETS
    assert {r["concurrency"] for r in rows} == {1, 4}
    for row in rows:
        assert set(row) >= ROW_KEYS, row
        assert row["requests"] > 0, row
        assert "server_cpu_us" in row, row
        if row["target"] != "constant":
            assert "db_cpu_us" in row and "db_cpu_scope" in row, row
    engines = {(r["target"], r["engine"]) for r in rows if r["target"] == "service"}
    assert engines == {("service", "postgresql"), ("service", "mariadb")}


def test_ratios_and_goals_present(tiny_run: tuple[int, str, dict[str, Any]]) -> None:
    result = tiny_run[2]
    assert {(r["engine"], r["concurrency"]) for r in result["ratios"]} == {
        ("postgresql", 1), ("postgresql", 4), ("mariadb", 1), ("mariadb", 4)
    }  # fmt: skip
    for ratio in result["ratios"]:
        assert ratio["rps_ratio"] is not None and ratio["p99_ratio"] is not None
        assert ratio["rps_ratio_sqlalchemy"] is not None, ratio
        assert ratio["p99_ratio_sqlalchemy"] is not None, ratio
    names = " | ".join(g["goal"] for g in result["goals"])
    for word in ("pool-status", "/metrics", "memory", "circuit open", "database back"):
        assert word in names
    # Every goal that could be measured in tiny mode has a figure (met or not).
    measured = [g for g in result["goals"] if "rows100" not in g["goal"]]
    assert all(g["measured"] is not None for g in measured), measured


def test_extras_have_their_figures(tiny_run: tuple[int, str, dict[str, Any]]) -> None:
    extras = tiny_run[2]["extras"]
    scale = extras["scale"]
    assert scale["live_pools"]["live_pools"] == 10
    assert scale["live_pools"]["registered"] == 20
    assert scale["pool_status"]["reported_total_pools"] >= 10
    for engine in ("postgresql", "mariadb"):
        assert scale["memory"][engine]["pools"] == 2
        assert scale["memory"][engine]["open_connections_by_status"] == 4
    assert scale["memory"]["postgresql"]["open_connections_by_database"] == 4
    assert extras["circuit_open"]["trigger"]["opened"] is True
    assert set(extras["circuit_open"]["codes"]) == {"DB_UNAVAILABLE"}
    assert extras["recovery"]["recovered"] is True
