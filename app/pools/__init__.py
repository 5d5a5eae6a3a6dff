"""pools: one bounded, fair, monitored pool per registered connection.

``PoolManager`` owns the set; a ``ManagedPool`` owns one engine (built by
``engine_factory``), guarded by a ``FairGate`` and a ``CircuitBreaker``; a registration with
replicas gets a ``PoolCluster`` of them, one per node, routed by role. A request's work runs
through ``PoolManager.run`` (it sees its node as a ``QueryNode``) and learns which node
answered (``NodeRef``, for a cluster).
"""

from app.pools.breaker import CircuitBreaker
from app.pools.cluster import NodeRef, PoolCluster
from app.pools.engine_factory import build_engine
from app.pools.execute import QueryNode
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
    "NodeRef",
    "PoolCluster",
    "PoolManager",
    "PoolSnapshot",
    "PoolState",
    "PoolStats",
    "QueryNode",
    "build_engine",
]
