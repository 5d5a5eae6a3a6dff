"""The statement analyser: the one place that looks inside caller SQL (DESIGN "SQL handling").

``analyse(sql, db_type)`` tokenizes one request's SQL for its dialect (PostgreSQL, or the
MySQL family: ``lexer``) and answers, cached per (dialect, text): where the real ``:name``
placeholders are, how many statements there are, and what kind each one is
(``classify``). ``bind_named`` renders the placeholders in the driver's style with the
values in order (``bind``).

Anything the analyser cannot classify is ``StatementKind.UNKNOWN``, which every consumer
treats as the most restrictive kind (may write, may change the session); text it cannot
even tokenize (an unterminated literal) is ``UNKNOWN`` with ``Analysis.error`` set.
"""

from __future__ import annotations

from app.sql.analyser import Analysis, Placeholder, analyse, default_escapes, family_of
from app.sql.bind import bind_named, check_positional
from app.sql.kinds import StatementKind

__all__ = [
    "Analysis",
    "Placeholder",
    "StatementKind",
    "analyse",
    "bind_named",
    "check_positional",
    "default_escapes",
    "family_of",
]
