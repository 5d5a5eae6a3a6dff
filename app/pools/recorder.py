"""What the pools report to metrics, and a recorder that does nothing.

``PoolMetrics`` (``app.pools.metrics``) records; ``NOP`` is handed out when there is no
metrics collector (a pool or manager built on its own, e.g. in a test), so call sites
record unconditionally instead of testing for ``None`` (HikariCP's
``NopMetricsTrackerDelegate``).
"""

from __future__ import annotations

from typing import Protocol

from app.domain import ConnectionConfig

__all__ = ["NOP", "MetricsRecorder", "NopRecorder"]


class MetricsRecorder(Protocol):
    """The events a pool, the manager and the housekeeper report."""

    def observe_create(self, config: ConnectionConfig, seconds: float) -> None: ...

    def observe_wait(self, config: ConnectionConfig, seconds: float) -> None: ...

    def observe_use(self, config: ConnectionConfig, seconds: float) -> None: ...

    def observe_query(self, config: ConnectionConfig, seconds: float) -> None: ...

    def count_query_error(self, config: ConnectionConfig, code: str) -> None: ...

    def count_recreation(self, config: ConnectionConfig) -> None: ...

    def count_eviction(self, config: ConnectionConfig) -> None: ...

    def forget(self, connection_id: int) -> None: ...

    def retain(self, live_ids: set[int]) -> None: ...


class NopRecorder:
    """Records nothing."""

    def observe_create(self, config: ConnectionConfig, seconds: float) -> None:
        pass

    def observe_wait(self, config: ConnectionConfig, seconds: float) -> None:
        pass

    def observe_use(self, config: ConnectionConfig, seconds: float) -> None:
        pass

    def observe_query(self, config: ConnectionConfig, seconds: float) -> None:
        pass

    def count_query_error(self, config: ConnectionConfig, code: str) -> None:
        pass

    def count_recreation(self, config: ConnectionConfig) -> None:
        pass

    def count_eviction(self, config: ConnectionConfig) -> None:
        pass

    def forget(self, connection_id: int) -> None:
        pass

    def retain(self, live_ids: set[int]) -> None:
        pass


NOP: MetricsRecorder = NopRecorder()
