"""The seam between dbpool and its drivers: one typed ``DriverAdapter`` per driver.

Every private attribute of asyncpg, aiomysql/PyMySQL and asyncmy is touched only in this
package (and SQLAlchemy's pool internals only in ``app.pools.queue_pool``). Each adapter
uses the driver's private surface where it buys speed, checks once per process that the
installed version still has it, and otherwise uses the public API (slower, correct) after
ONE warning in the log. ``DBPOOL_DRIVER_FALLBACK=1`` forces the public path: it is a
switch for tests and benchmarks, not a setting for production.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "FALLBACK_ENV",
    "DriverAdapter",
    "Fetched",
    "confirm_surface",
    "fallback_forced",
    "forget_checks",
    "surface_present",
]

log = logging.getLogger("app.pools.drivers")

FALLBACK_ENV = "DBPOOL_DRIVER_FALLBACK"
_checked: dict[str, bool] = {}


def fallback_forced() -> bool:
    """True when the test switch forces every adapter onto its public-API path."""
    return os.environ.get(FALLBACK_ENV, "") not in ("", "0")


Surface = Iterable[tuple[object, Iterable[str]]]


def surface_present(driver: str, owners: Callable[[], Surface]) -> bool:
    """Whether every ``(class or object, attribute names)`` of ``driver``'s private surface
    (listed by ``owners()``, called once) exists. Decided once per process and driver; a
    missing name (or the test switch) logs one warning naming it, and the adapter then
    uses the public API."""
    known = _checked.get(driver)
    if known is not None:
        return known
    return _decide(driver, owners())


def confirm_surface(driver: str, owners: Surface) -> None:
    """Check the instance-level part of the surface on a live connection, once: what a
    class cannot show (attributes set in ``__init__``). Missing: the public path from now."""
    if _checked.get(driver) and f"{driver}:live" not in _checked:
        _checked[f"{driver}:live"] = True
        _checked[driver] = _decide(driver, owners)


def _decide(driver: str, owners: Surface) -> bool:
    missing = [f"{_name(owner)}.{name}" for owner, names in owners for name in names
               if not hasattr(owner, name)]
    fast = not missing and not fallback_forced()
    if not fast:
        why = f"{FALLBACK_ENV} is set" if not missing else "missing: " + ", ".join(missing)
        log.warning("driver %s: using the public-API path (slower, correct); %s", driver, why,
                    extra={"driver": driver})
    _checked[driver] = fast
    return fast


def _name(owner: object) -> str:
    return owner.__name__ if isinstance(owner, type) else type(owner).__name__


def forget_checks() -> None:
    """Check the private surfaces again on next use (tests flip the switch)."""
    _checked.clear()


@dataclass(slots=True, kw_only=True)
class Fetched:
    """What one statement gave back, before encoding: at most ``limit`` rows of a result
    set (``columns`` not None), or the affected row count of a statement without one."""

    columns: list[str] | None
    rows: list[Any]
    json_columns: frozenset[int]
    affected: int = 0
    # MySQL: rows remain unread on the wire, so the connection must not be reused.
    unread: bool = False


class DriverAdapter(Protocol):
    """What dbpool needs from one driver. ``driver`` is the driver's own connection."""

    name: str

    @property
    def fast(self) -> bool:
        """True when the private (faster) surface is in use."""
        ...

    def confirm(self, driver: Any) -> None:
        """Check the private surface against a live connection (once per process)."""
        ...

    def is_closed(self, driver: Any) -> bool:
        """The socket is known dead (closed by us, or the server's close was seen): no I/O."""
        ...

    def server_id(self, driver: Any) -> int:
        """The server's id for the session (no I/O): PostgreSQL backend pid, MySQL thread id."""
        ...

    async def backslash_escapes(self, driver: Any) -> bool:
        """Whether the session reads a backslash inside ``'...'`` as an escape."""
        ...

    async def fetch(self, driver: Any, sql: str, args: Any, *, limit: int) -> Fetched:
        """Run one bound statement; read at most ``limit`` rows of its result (``unread``:
        rows were left on the wire, so the connection must be discarded)."""
        ...

    async def execute(self, driver: Any, sql: str) -> None:
        """Run one statement without values, reading nothing back."""
        ...

    async def ping(self, driver: Any) -> None:
        """One round trip proving the session answers."""
        ...

    def session_marker(self, driver: Any) -> Any:
        """What the driver knows of a clean session, to compare at return (no I/O)."""
        ...

    def session_changed(self, driver: Any, marker: Any) -> bool:
        """Whether the session may have changed since ``marker`` was taken, from what the
        driver saw the server report (an open transaction, a reported setting, warnings);
        True when the driver cannot tell. No I/O."""
        ...

    async def reset(self, driver: Any, plan: Any) -> bool:
        """Clean the session on return (``plan``: the engine's reset, built once); False
        when the driver cannot: the connection must then be discarded, never reused."""
        ...

    def refused_before_send(self, exc: BaseException) -> bool:
        """True for the driver's "connection is closed" refusal, raised before any write."""
        ...

    async def cancel(self, via: Any, server_id: int) -> bool:
        """Stop what ``server_id`` runs, sent over ``via`` (another driver connection of the
        same login); False when the session is already gone."""
        ...
