"""Keeping each caller's SQL in its lane, before anything is sent (DESIGN "SQL handling").

Every statement of ``/query``, ``/transaction`` and the catalogue goes through ``plan``:
the analyser (``app.sql``) reads it once per text, then

- exactly one statement (a trailing ``;`` and comments are fine), else 422;
- inside ``/transaction``: no transaction control (BEGIN/COMMIT/ROLLBACK/END/ABORT,
  SET TRANSACTION, session characteristics, LOCK/UNLOCK TABLES, XA, PREPARE TRANSACTION,
  ``SET autocommit``); on MySQL/MariaDB also no DDL and nothing unknown, which could
  commit the transaction implicitly. 422 naming ``statementIndex``. Savepoints stay;
- on a ``readOnly`` connection: reads and savepoints only; writes, DDL and anything that
  could change the session or the transaction (SESSION, TRANSACTION, UNKNOWN kinds) are
  403 READ_ONLY. What the analyser cannot see (a function that writes) meets the
  database's read-only transaction, which refuses it (403 READ_ONLY as well);
- values: an object binds the real ``:name`` placeholders (``bind_named``), an array keeps
  the driver's positional style (on MySQL every ``%s`` must stand outside literals).

- inside ``/transaction``: no statement that changes how later text reads (``sql_mode``,
  ``standard_conforming_strings``), 422.

Literals depend on the session: with MySQL's ``NO_BACKSLASH_ESCAPES`` a backslash escapes
nothing, with PostgreSQL's ``standard_conforming_strings = off`` it escapes in ``'...'``
too. The query path plans with the mode the session reports (MySQL: the ``server_status``
of its last answer; PostgreSQL: the parameter the server reports) and, should it differ
when a statement is about to be sent (a function changed it), plans that statement again
(``for_session``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.domain import ConnectionConfig, DbType
from app.errors import ReadOnlyViolation, ValidationFailed
from app.sql import (
    Analysis,
    StatementKind,
    analyse,
    bind_named,
    check_positional,
    default_escapes,
)

__all__ = ["Planned", "for_session", "plan"]

K = StatementKind
_READ_ONLY_ALLOWED = frozenset({K.READ, K.SAVEPOINT})
_IMPLICIT_COMMIT = frozenset({K.DDL, K.UNKNOWN})


@dataclass(frozen=True, slots=True)
class Planned:
    """One statement as the driver gets it, what the analyser knows about it, and what it
    was made from (to plan it again for another ``sql_mode``)."""

    sql: str
    args: Any
    analysis: Analysis
    source: str
    params: Any
    index: int | None
    backslash_escapes: bool


def plan(sql: str, params: Mapping[str, Any] | Any, config: ConnectionConfig, *,
         index: int | None = None, backslash_escapes: bool | None = None) -> Planned:
    """Check ``sql`` against its lane and bind ``params``; ``index`` is the statement's
    position inside ``/transaction`` (None for a lone statement); ``backslash_escapes``
    as the session reads literals (None: the dialect's default). Raises
    ``ValidationFailed`` or ``ReadOnlyViolation``; nothing has been sent."""
    if backslash_escapes is None:
        backslash_escapes = default_escapes(config.db_type)
    analysis = analyse(sql, config.db_type, backslash_escapes=backslash_escapes)
    try:
        _check(analysis, config, index)
        driver_sql, args = _bind(sql, analysis, params, config.db_type)
    except (ValidationFailed, ReadOnlyViolation) as exc:
        if index is not None:
            exc.details["statementIndex"] = index
        raise
    return Planned(driver_sql, args, analysis, sql, params, index, backslash_escapes)


def for_session(planned: Planned, config: ConnectionConfig, backslash_escapes: bool) -> Planned:
    """``planned`` for a session whose backslash mode is ``backslash_escapes``."""
    if planned.backslash_escapes == backslash_escapes:
        return planned
    return plan(planned.source, planned.params, config, index=planned.index,
                backslash_escapes=backslash_escapes)


def _check(analysis: Analysis, config: ConnectionConfig, index: int | None) -> None:
    if analysis.error is not None:
        raise ValidationFailed(
            f"The SQL cannot be read: {analysis.error}. Close every quote, quoted "
            "identifier and comment", details={"field": "sql"})
    if analysis.statement_count != 1:
        raise ValidationFailed(_count_message(analysis.statement_count),
                               details={"field": "sql",
                                        "statementCount": analysis.statement_count})
    kind = analysis.kind
    if index is not None and kind is K.TRANSACTION:
        raise ValidationFailed(
            "/transaction begins and commits the transaction itself: a statement that "
            "begins, ends or reconfigures a transaction (BEGIN, COMMIT, ROLLBACK, SET "
            "TRANSACTION, LOCK TABLES, XA, ...) is not allowed among its statements; use "
            "SAVEPOINT / ROLLBACK TO SAVEPOINT for partial undo",
            details={"field": "statements", "kind": kind.value})
    if index is not None and analysis.changes_syntax:
        raise ValidationFailed(
            "A statement that changes how SQL text is read (sql_mode, "
            "standard_conforming_strings) is not allowed inside /transaction: the statements "
            "after it were read the old way. Change it in the database's or the login's "
            "defaults instead", details={"field": "statements"})
    if index is not None and config.db_type.is_mysql_family and kind in _IMPLICIT_COMMIT:
        raise ValidationFailed(
            f"MySQL and MariaDB commit before and after DDL (and may inside a {kind.value} "
            "statement such as CALL), which would break /transaction's all-or-nothing: "
            "send it alone through /query", details={"field": "statements",
                                                     "kind": kind.value})
    if config.read_only and kind not in _READ_ONLY_ALLOWED:
        raise ReadOnlyViolation(
            f"The connection is read-only: a {kind.value} statement could change data, the "
            "schema, the session or the transaction, so it is refused. Send reads only",
            details={"kind": kind.value})


def _count_message(count: int) -> str:
    if count == 0:
        return "The SQL holds no statement (only comments or semicolons)"
    return (f"One statement per request: found {count}. A trailing ';' and comments are "
            "fine; send further statements as separate /query calls or /transaction items")


def _bind(sql: str, analysis: Analysis, params: Any, db_type: DbType) -> tuple[str, Any]:
    if isinstance(params, Mapping):
        if params or analysis.placeholders:
            return bind_named(sql, analysis, params, db_type)
        return sql, None
    if params:
        values = list(params)
        check_positional(analysis, values, db_type)
        return sql, values
    return sql, None  # no values: the text goes as written (``%`` and ``:x`` too)
