"""The driver seam holds: no private attribute of asyncpg, aiomysql, PyMySQL, asyncmy or
SQLAlchemy's pool is touched outside the adapter modules (an AST scan of app/).

Counted as a use: ``x._name`` on anything but ``self``/``cls``; ``getattr``/``hasattr``/
``setattr`` with a literal ``"_name"``; the driver attributes that are private in all but
name (``server_status``, ``server_thread_id``); and ``self._name`` inside a class with a
base from outside ``app`` when that class does not define ``_name`` itself (the base's).
"""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import pytest

import app
from app.pools.drivers import FALLBACK_ENV, forget_checks
from app.pools.drivers.base import confirm_surface, surface_present

APP = Path(app.__file__).parent
# The adapter modules: the only places allowed to hold a driver's private API.
ADAPTERS = frozenset({
    "pools/drivers/pg.py",
    "pools/drivers/mysql.py",
    "pools/drivers/mysql_wire.py",
    "pools/queue_pool.py",  # SQLAlchemy's pool internals, in one module
})
PRIVATE_IN_ALL_BUT_NAME = frozenset({"server_status", "server_thread_id"})
ATTRIBUTE_CALLS = frozenset({"getattr", "hasattr", "setattr"})


def _private(name: str) -> bool:
    return (name.startswith("_") and not name.startswith("__")) or \
        name in PRIVATE_IN_ALL_BUT_NAME


def _own_names(tree: ast.AST) -> set[str]:
    """Every ``self.x = ...`` target and every def / assigned name in ``tree``."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def _foreign_bases(tree: ast.Module) -> set[str]:
    """Names imported from outside ``app`` in this module (candidate foreign bases)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and not (node.module or "").startswith("app"):
            names.update(alias.asname or alias.name for alias in node.names)
    return names


def private_uses(tree: ast.Module) -> list[tuple[int, str]]:
    """``(line, attribute)`` for each use of a foreign private attribute in ``tree``."""
    found: list[tuple[int, str]] = []
    foreign = _foreign_bases(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            receiver = node.value
            if not (isinstance(receiver, ast.Name) and receiver.id in ("self", "cls")):
                found.append((node.lineno, node.attr))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id in ATTRIBUTE_CALLS and len(node.args) > 1:
            name = node.args[1]
            if isinstance(name, ast.Constant) and isinstance(name.value, str) \
                    and _private(name.value):
                found.append((node.lineno, name.value))
        elif isinstance(node, ast.ClassDef) and any(
                isinstance(base, ast.Name) and base.id in foreign for base in node.bases):
            own = _own_names(node)
            found.extend(
                (inner.lineno, inner.attr) for inner in ast.walk(node)
                if isinstance(inner, ast.Attribute) and isinstance(inner.value, ast.Name)
                and inner.value.id == "self" and _private(inner.attr)
                and inner.attr not in own)
    return found


def _scan() -> dict[str, list[tuple[int, str]]]:
    paths = sorted(APP.rglob("*.py"))
    trees = {str(p.relative_to(APP)): ast.parse(p.read_text(), str(p)) for p in paths}
    return {path: private_uses(tree) for path, tree in trees.items()}


def test_no_private_driver_attribute_outside_the_adapters() -> None:
    outside = {path: uses for path, uses in _scan().items() if uses and path not in ADAPTERS}
    assert outside == {}, "move these into app/pools/drivers (or queue_pool.py)"


def test_the_scan_finds_the_adapters_own_uses() -> None:
    # Not vacuous: the private surface the adapters rely on is seen where it lives.
    seen = {path: {name for _, name in uses} for path, uses in _scan().items()}
    assert {"_protocol", "_get_statement", "_get_parameters", "_get_attributes",
            "_drop_local_statement_cache", "_prepared_statement_cache"} <= seen[
        "pools/drivers/pg.py"]
    assert {"_writer", "_reader", "_eof", "_transport", "_connected", "_proto",
            "server_status"} <= seen["pools/drivers/mysql.py"]
    assert {"_result", "_write_bytes", "_read_bytes", "_execute_command",
            "server_status"} <= seen["pools/drivers/mysql_wire.py"]
    assert {"_pool", "_inc_overflow", "_dec_overflow", "_create_connection",
            "_do_return_conn"} <= seen["pools/queue_pool.py"]


def test_the_scan_flags_each_kind_of_use() -> None:
    source = '''
from sqlalchemy.pool import QueuePool
from app.pools.gate import FairGate

class Mine(QueuePool):
    def f(self, conn):
        self._own = 1
        return self._pool, self._own

class Ours(FairGate):
    def g(self):
        return self._waiters

def h(conn, proxy):
    conn._protocol.bind_execute()
    getattr(conn, "_writer", None)
    return conn.server_thread_id, self_like._x if False else proxy.public
'''
    uses = {name for _, name in private_uses(ast.parse(source))}
    assert uses == {"_pool", "_protocol", "_writer", "server_thread_id", "_x"}


def test_a_missing_private_name_means_the_public_path_and_one_warning(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    class Driver:
        _present = 1

    monkeypatch.delenv(FALLBACK_ENV, raising=False)
    forget_checks()
    try:
        with caplog.at_level(logging.WARNING, logger="app.pools.drivers"):
            assert surface_present("seam-test", lambda: ((Driver, ("_present",)),))
            confirm_surface("seam-test", ((Driver(), ("_present", "_renamed")),))
            for _ in range(3):
                assert not surface_present("seam-test", lambda: ((Driver, ("_present",)),))
        messages = [r.getMessage() for r in caplog.records]
        assert messages == ["driver seam-test: using the public-API path (slower, correct); "
                            "missing: Driver._renamed"]
    finally:
        forget_checks()
