"""pools: one bounded, fair, monitored pool per registered connection.

``PoolManager`` owns the set; a ``ManagedPool`` owns one engine (built by
``engine_factory``), guarded by a ``FairGate`` and a ``CircuitBreaker``; a registration with
replicas gets a ``PoolCluster`` of them, one per node, routed by role.
"""

from app.pools.breaker import CircuitBreaker
from app.pools.cluster import PoolCluster
from app.pools.engine_factory import build_engine
from app.pools.gate import FairGate, GateFull, GateTimeout
from app.pools.managed_pool import ManagedPool
from app.pools.manager import PoolManager
from app.pools.stats import PoolSnapshot, PoolState, PoolStats

__all__ = [
    "CircuitBreaker",
    "FairGate",
    "GateFull",
    "GateTimeout",
    "ManagedPool",
    "PoolCluster",
    "PoolManager",
    "PoolSnapshot",
    "PoolState",
    "PoolStats",
    "build_engine",
]
