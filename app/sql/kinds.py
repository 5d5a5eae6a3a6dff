"""The kinds of statement the analyser tells apart, from least to most restrictive."""

from __future__ import annotations

import enum

__all__ = ["StatementKind"]


class StatementKind(enum.StrEnum):
    """What one statement does; consumers treat ``UNKNOWN`` as the most restrictive."""

    READ = "read"  # SELECT, WITH ... SELECT, VALUES, TABLE, SHOW, EXPLAIN (not ANALYZE)
    SAVEPOINT = "savepoint"  # SAVEPOINT, RELEASE, ROLLBACK TO: cannot end the outer transaction
    WRITE = "write"  # INSERT, UPDATE, DELETE, MERGE, REPLACE, a CTE that writes, FOR UPDATE
    DDL = "ddl"  # CREATE, ALTER, DROP, TRUNCATE, GRANT, VACUUM, ... (not temporary objects)
    SESSION = "session"  # SET/RESET, PREPARE/DEALLOCATE/DISCARD, LISTEN, LOCK, temp objects, USE
    TRANSACTION = "transaction"  # BEGIN/START, COMMIT, ROLLBACK, SET TRANSACTION, LOCK TABLES, XA
    UNKNOWN = "unknown"  # anything else (CALL, DO, COPY, ...): may do anything

    @property
    def rank(self) -> int:
        """Higher is more restrictive."""
        return _RANK[self]


_RANK = {kind: rank for rank, kind in enumerate(StatementKind)}
