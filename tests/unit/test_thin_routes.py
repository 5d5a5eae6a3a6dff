"""The routers stay thin: lending, retrying, routing, discarding, breaker and error accounting,
metrics and tracing of a request's work live in the pool layer (``PoolManager.run``), not in
``app/api/routes`` (an AST scan).

Rules for every module of ``app/api/routes``:

- no import of a pool internal (the managed pool, the cluster, the retry signal, the breaker,
  the gate, the accounting, the recorder, the drivers ...) nor of their classes by name;
- the pool manager is used only through its route-facing calls (``run``, ``invalidate``,
  ``snapshot``, ``snapshots``): no ``pools.get(...)`` handing a pool to the route;
- no call of the pool layer's own steps (``record_query``, ``record_query_error``, ``route``,
  ``connection``, ``query_span`` ..., and ``run`` on anything but the manager);
- a route handler calls ``pools.run`` at most once.

And, per DESIGN.md, nothing in ``app/pools`` imports ``app.api``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import app

APP = Path(app.__file__).parent
ROUTES = APP / "api" / "routes"

INTERNAL_MODULES = frozenset({
    "app.pools.accounting", "app.pools.breaker", "app.pools.cluster", "app.pools.execute",
    "app.pools.gate", "app.pools.managed_pool", "app.pools.probe", "app.pools.queue_pool",
    "app.pools.recorder", "app.pools.stale", "app.pools.drivers",
})
INTERNAL_NAMES = frozenset({
    "ManagedPool", "PoolCluster", "SentNothing", "CircuitBreaker", "FairGate", "measured",
})
MANAGER_CALLS = frozenset({"run", "invalidate", "snapshot", "snapshots"})
POOL_STEPS = frozenset({  # ``run`` too: on anything but the manager, it is a pool's
    "record_query", "record_query_error", "run", "route", "connection", "query_span",
    "pool_span",
})


def _internal_module(name: str) -> bool:
    return any(name == m or name.startswith(m + ".") for m in INTERNAL_MODULES)


def _receiver_is_pools(node: ast.Attribute) -> bool:
    # ``parts.pools``: the manager as the routes reach it (a bare ``pools`` is the router module)
    return isinstance(node.value, ast.Attribute) and node.value.attr == "pools"


def _is_pools_run(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
        and node.func.attr == "run" and _receiver_is_pools(node.func)


def _is_route(node: ast.AST) -> bool:
    return isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef) and any(
        isinstance(d, ast.Call) and isinstance(d.func, ast.Attribute)
        and isinstance(d.func.value, ast.Name) and d.func.value.id == "router"
        for d in node.decorator_list)


def thick_spots(tree: ast.Module) -> list[tuple[int, str]]:
    """``(line, what)`` for each place ``tree`` does the pool layer's work itself."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, f"import {a.name}") for a in node.names
                      if _internal_module(a.name)]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if _internal_module(module):
                found.append((node.lineno, f"from {module} import"))
            found += [(node.lineno, f"imports {a.name}") for a in node.names
                      if module.startswith("app") and a.name in INTERNAL_NAMES]
        elif isinstance(node, ast.Attribute):
            if _receiver_is_pools(node):
                if node.attr not in MANAGER_CALLS:
                    found.append((node.lineno, f"pools.{node.attr}"))
            elif node.attr in POOL_STEPS:
                found.append((node.lineno, f".{node.attr}"))
        if _is_route(node):
            runs = sum(1 for inner in ast.walk(node) if _is_pools_run(inner))
            if runs > 1:
                found.append((node.lineno, f"{runs} pools.run calls in one route"))
    return found


def _routes() -> dict[str, ast.Module]:
    return {p.name: ast.parse(p.read_text(), str(p)) for p in sorted(ROUTES.glob("*.py"))}


def test_the_routers_leave_the_pool_layer_its_work() -> None:
    thick = {name: spots for name, tree in _routes().items() if (spots := thick_spots(tree))}
    assert thick == {}, "move this into app/pools (PoolManager.run / app.pools.execute)"


def test_each_query_route_makes_one_pool_call() -> None:
    tree = _routes()["queries.py"]
    calls = {node.name: sum(1 for inner in ast.walk(node) if _is_pools_run(inner))
             for node in ast.walk(tree) if _is_route(node)}
    assert calls == {"query": 1, "transaction": 1, "tables": 1, "table_rows": 1,
                     "test_connection": 1}


def test_the_scan_flags_each_kind_of_thick_route() -> None:
    source = '''
from app.pools.managed_pool import ManagedPool
from app.pools import PoolCluster
import app.pools.stale

@router.post("/x")
async def handler(parts):
    pool = await parts.pools.get(1)
    pool.record_query_error("QUERY_ERROR")
    pool.record_query(0.1)
    await pool.run(work)
    await pool.route(work, target="auto", read=True)
    async with pool.connection() as conn:
        with parts.tracing.query_span(pool.config, "query", ()):
            pass
    await parts.pools.run(1, work, operation="a")
    await parts.pools.run(1, work, operation="b")
'''
    whats = {what for _, what in thick_spots(ast.parse(source))}
    assert whats == {
        "from app.pools.managed_pool import", "imports ManagedPool", "imports PoolCluster",
        "import app.pools.stale", "pools.get", ".record_query_error", ".record_query",
        ".run", ".route", ".connection", ".query_span", "2 pools.run calls in one route",
    }


def test_the_pool_layer_does_not_import_the_api() -> None:
    importers = []
    for path in sorted((APP / "pools").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n == "app.api" or n.startswith("app.api.") for n in names):
                importers.append(f"{path.relative_to(APP)}:{node.lineno}")
    assert importers == []
