"""The metrics recorder seam: PoolMetrics and the do-nothing recorder offer the same calls."""

from __future__ import annotations

import inspect

from app.pools.metrics import PoolMetrics
from app.pools.recorder import NOP, MetricsRecorder, NopRecorder


def _calls(cls: type) -> dict[str, inspect.Signature]:
    return {name: inspect.signature(fn) for name, fn in inspect.getmembers(cls)
            if inspect.isfunction(fn) and not name.startswith("_")}


def test_both_recorders_offer_every_call_of_the_protocol() -> None:
    wanted = _calls(MetricsRecorder)
    assert wanted  # not vacuous
    for recorder in (PoolMetrics, NopRecorder):
        offered = _calls(recorder)
        assert {name: offered.get(name) for name in wanted} == wanted, recorder


def test_the_nop_recorder_is_what_a_pool_gets_without_metrics() -> None:
    assert isinstance(NOP, NopRecorder)
    assert NOP.retain({1}) is None and NOP.forget(1) is None
