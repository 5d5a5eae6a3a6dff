"""The short chaos soak (``python -m bench.soak --minutes 1.4``: 84 s of load and faults,
a 60 s cut and a 10 s cut among them) against the real databases, one test per bar.

The soak runs once for the module, as a subprocess; each test reads its JSON report. The
figures behind a missed bar are in the assertion message (and the report's path).
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
MINUTES = 1.4


@pytest.fixture(scope="module")
def soak(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("soak") / "soak.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--minutes", str(MINUTES), "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=MINUTES * 60 + 180,
    )
    assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-3000:]  # 2: not run
    report: dict[str, Any] = json.loads(out.read_text())
    report["_summary"] = proc.stdout
    return report


def _bar(report: dict[str, Any], words: str) -> dict[str, Any]:
    found = [bar for bar in report["bars"] if words in bar["bar"]]
    assert len(found) == 1, [bar["bar"] for bar in report["bars"]]
    return found[0]


def _check(report: dict[str, Any], words: str) -> None:
    bar = _bar(report, words)
    assert bar["met"] is True, f"{bar['bar']}: {bar['measured']}\n{report['_summary']}"


def test_the_soak_ran_its_load_and_its_faults(soak: dict[str, Any]) -> None:
    assert soak["requests"]["by_outcome"]["ok"] > 0
    kinds = set(soak["faults"]["by_kind"])
    assert kinds >= {"cut", "stall", "delay", "kill", "burst", "patch", "deactivate",
                     "registry_cut"}  # fmt: skip
    assert soak["faults"]["not_applied"] == []
    assert soak["writes"]["acknowledged"] > 0 and soak["hangups"]["clients_hung_up"] > 0
    assert soak["meta"]["wrong_results"] == 0


def test_every_response_is_an_envelope(soak: dict[str, Any]) -> None:
    _check(soak, "envelope")


def test_no_log_error_for_a_client_that_went_away(soak: dict[str, Any]) -> None:
    _check(soak, "client that went away")


def test_hung_up_clients_statements_are_gone_from_the_server(soak: dict[str, Any]) -> None:
    _check(soak, "statement gone from the server")


def test_no_undocumented_5xx(soak: dict[str, Any]) -> None:
    _check(soak, "no 5xx other than")


def test_sessions_never_above_a_pools_maximum(soak: dict[str, Any]) -> None:
    _check(soak, "sessions never above")


def test_no_session_left_after_shutdown(soak: dict[str, Any]) -> None:
    _check(soak, "left after shutdown")
    assert soak["shutdown"]["exit_code"] in (0, -15), soak["shutdown"]


def test_no_acknowledged_write_lost(soak: dict[str, Any]) -> None:
    _check(soak, "acknowledged writes lost")


def test_back_within_1_5_s_after_a_10_s_cut(soak: dict[str, Any]) -> None:
    _check(soak, "after a 10 s cut")


def test_back_within_1_5_s_after_a_60_s_cut(soak: dict[str, Any]) -> None:
    _check(soak, "after a 60 s cut")


def test_back_within_1_5_s_after_other_cuts_and_stalls(soak: dict[str, Any]) -> None:
    _check(soak, "other cuts and stalls")
