"""Whether a pooled connection's session may carry state: reset on demand.

A connection is *clean* after its set-up and after every reset. It turns *dirty*, in its
pool record's ``info`` (it lives as long as the driver connection), when a request could
have changed its session, and only a dirty connection pays the reset on return
(``needs_reset``: THE decision, called by whatever returns a connection).

Marked dirty (``mark_dirty``), before the statement is sent:

- any statement the analyser does not prove a plain read (``leaves_clean``): SET/RESET,
  PREPARE/DEALLOCATE/DISCARD, LISTEN, LOCK, temporary objects, cursors, USE, advisory and
  named locks (``GET_LOCK`` ...), ``set_config``, a function it does not know (a
  user-defined function may SET), every write (PostgreSQL's ``currval``/``lastval`` after
  an implicit ``nextval``, MySQL's ``LAST_INSERT_ID()``), DDL, ``UNKNOWN``;
- every ``/transaction`` (whatever its statements) and the MySQL request timeout
  tighter than the session's (a ``SET``);
- any failure other than the database refusing a plain read in autocommit (a client
  timeout or cancel, a lost link, a failed rollback, ...);
- any statement sent through SQLAlchemy's own ``execute`` (health checks, monitor probes,
  anything outside the query runner, which is the only one that vouches for its SQL).

Checked at return, with no I/O (``needs_reset``): a transaction left open (PostgreSQL's
transaction status; MySQL's "in transaction" status flag, or autocommit off); on
PostgreSQL any ParameterStatus the server reported since the connection was clean (a
function that SET ``TimeZone``, ``DateStyle``, ``standard_conforming_strings``...); on
MySQL warnings left by the last statement (``SHOW WARNINGS`` would show them). A driver
that cannot tell counts as dirty.

A read-only connection's request (``BEGIN READ ONLY`` ... ``COMMIT``) of a plain read
leaves it clean: the transaction has ended and nothing of it remains.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from app.pools.drivers import adapter_of
from app.sql import Analysis

__all__ = ["info_of", "leaves_clean", "mark_clean", "mark_dirty", "needs_reset"]

Info = MutableMapping[Any, Any]

_DIRTY = "dbpool_dirty"  # info: True, or absent once clean
_MARKER = "dbpool_session_marker"  # info: what the driver reported when it was clean


def leaves_clean(analysis: Analysis) -> bool:
    """A statement that cannot leave state in the session when it runs alone in autocommit
    (or in a read-only transaction that ends): one plain read calling only known-safe
    functions."""
    return analysis.read_only and analysis.statement_count == 1


def info_of(conn: AsyncConnection) -> Info | None:
    """The pool record's ``info`` of a lent connection (None once it is invalidated or
    closed: it will never be reused, so there is nothing to track). No I/O."""
    sync = conn.sync_connection
    if sync is None or sync.invalidated or sync.closed:
        return None
    return sync.connection.info


def mark_dirty(target: AsyncConnection | Info | None) -> None:
    """The session may carry state now: reset it on return."""
    info = info_of(target) if isinstance(target, AsyncConnection) else target
    if info is not None:
        info[_DIRTY] = True


def mark_clean(info: Info, driver: Any) -> None:
    """The session is as new (just set up, or just reset): remember what the driver
    reports of it, to tell a change the server reports later."""
    info.pop(_DIRTY, None)
    info[_MARKER] = adapter_of(driver).session_marker(driver)


def needs_reset(info: Info, driver: Any) -> bool:
    """Whether a returning connection must be reset before it is lent again (THE decision).

    Dirty when marked so, when a transaction is open, or when the driver reports a change
    of session (or cannot tell) since it was clean. No I/O."""
    if info.get(_DIRTY, False) or _MARKER not in info:
        return True
    return adapter_of(driver).session_changed(driver, info[_MARKER])
