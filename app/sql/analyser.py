"""Interface of the statement analyser (a first, keyword-only version; see ``app.sql``)."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from app.domain import DbType

__all__ = ["Analysis", "Placeholder", "StatementKind", "analyse", "bind_named"]


class StatementKind(enum.StrEnum):
    """What one statement does; consumers treat ``UNKNOWN`` as the most restrictive."""

    READ = "read"  # SELECT, WITH ... SELECT, VALUES, TABLE, SHOW, EXPLAIN (not ANALYZE)
    WRITE = "write"  # INSERT, UPDATE, DELETE, MERGE, REPLACE, a CTE that writes, SELECT INTO
    DDL = "ddl"  # CREATE, ALTER, DROP, TRUNCATE, GRANT, ... (not temporary objects)
    TRANSACTION = "transaction"  # BEGIN/START, COMMIT, ROLLBACK, SET TRANSACTION, LOCK TABLES, XA
    SAVEPOINT = "savepoint"  # SAVEPOINT, RELEASE, ROLLBACK TO: cannot end the outer transaction
    SESSION = "session"  # SET/RESET, PREPARE/DEALLOCATE/DISCARD, LISTEN, LOCK, temp objects, USE
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Placeholder:
    """A real ``:name`` placeholder: ``sql[start:end] == ":" + name``."""

    name: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Analysis:
    """What the analyser found in one request's SQL text."""

    kind: StatementKind
    statement_count: int
    placeholders: tuple[Placeholder, ...]
    # A read whose functions are all known to be safe: may go to a replica, leaves the
    # session clean. False for UNKNOWN and for reads that call unknown functions.
    read_only: bool
    # The statement could leave state in the session (SET, temp objects, locks, cursors,
    # unknown functions, UNKNOWN ...): the connection needs a reset before reuse.
    touches_session: bool
    # DEALLOCATE ALL / DISCARD ALL / DISCARD PLANS: server-side prepared statements are gone.
    wipes_prepared: bool

    @property
    def names(self) -> tuple[str, ...]:
        """Distinct placeholder names in order of first appearance."""
        return tuple(dict.fromkeys(p.name for p in self.placeholders))


_FIRST_WORD = re.compile(r"\s*\(?\s*([A-Za-z]+)")
_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
_KINDS = {
    "select": StatementKind.READ, "with": StatementKind.READ, "values": StatementKind.READ,
    "table": StatementKind.READ, "show": StatementKind.READ,
    "insert": StatementKind.WRITE, "update": StatementKind.WRITE,
    "delete": StatementKind.WRITE, "merge": StatementKind.WRITE,
    "replace": StatementKind.WRITE,
    "create": StatementKind.DDL, "alter": StatementKind.DDL, "drop": StatementKind.DDL,
    "truncate": StatementKind.DDL,
    "begin": StatementKind.TRANSACTION, "start": StatementKind.TRANSACTION,
    "commit": StatementKind.TRANSACTION, "rollback": StatementKind.TRANSACTION,
    "set": StatementKind.SESSION, "reset": StatementKind.SESSION,
}


@lru_cache(maxsize=4096)
def _analyse(sql: str, family: str) -> Analysis:
    match = _FIRST_WORD.match(sql)
    kind = _KINDS.get(match.group(1).lower(), StatementKind.UNKNOWN) if match else (
        StatementKind.UNKNOWN)
    placeholders = tuple(Placeholder(m.group(1), m.start(), m.end()) for m in _NAMED.finditer(sql))
    return Analysis(kind=kind, statement_count=1, placeholders=placeholders,
                    read_only=kind is StatementKind.READ,
                    touches_session=kind is not StatementKind.READ, wipes_prepared=False)


def analyse(sql: str, db_type: DbType) -> Analysis:
    """The analysis of ``sql`` in ``db_type``'s dialect (cached per dialect and text)."""
    return _analyse(sql, "mysql" if db_type.is_mysql_family else "postgresql")


def bind_named(
    sql: str, analysis: Analysis, params: Mapping[str, Any], db_type: DbType
) -> tuple[str, list[Any]]:
    """``sql`` with each placeholder in the driver's style (``$n`` on PostgreSQL, a name used
    twice binds the same ``$n``; ``%s`` on MySQL, with every other ``%`` doubled) and the
    values in the order the driver wants them. Raises ``ValidationFailed`` naming missing values."""
    raise NotImplementedError
