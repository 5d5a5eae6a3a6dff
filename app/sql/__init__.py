"""The statement analyser: the one place that looks inside caller SQL (DESIGN "SQL handling").

``analyse(sql, db_type)`` tokenizes one request's SQL for its dialect (PostgreSQL, or the
MySQL family) and answers, cached per (dialect, text): where the real ``:name``
placeholders are, how many statements there are, and what kind each one is.
``bind_named`` renders the placeholders in the driver's style with the values in order.

Anything the analyser cannot classify is ``StatementKind.UNKNOWN``, which every consumer
treats as the most restrictive kind (may write, may change the session).
"""

from __future__ import annotations

from app.sql.analyser import (
    Analysis,
    Placeholder,
    StatementKind,
    analyse,
    bind_named,
)

__all__ = ["Analysis", "Placeholder", "StatementKind", "analyse", "bind_named"]
