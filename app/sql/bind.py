"""Rendering placeholders in the driver's style, values kept apart from the SQL text."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from app.domain import DbType
from app.errors import ValidationFailed
from app.sql.analyser import Analysis

__all__ = ["bind_named", "check_positional"]


def bind_named(
    sql: str, analysis: Analysis, params: Mapping[str, Any], db_type: DbType
) -> tuple[str, list[Any]]:
    """``sql`` with each placeholder in the driver's style (``$n`` on PostgreSQL, a name used
    twice binds the same ``$n``; ``%s`` on MySQL, with every other ``%`` doubled) and the
    values in the order the driver wants them. Raises ``ValidationFailed`` naming missing
    values, or when the text also holds the driver's positional markers."""
    names = analysis.names
    missing = sorted(name for name in names if name not in params)
    if missing:
        raise ValidationFailed(f"No value for parameter(s): {', '.join(missing)}",
                               details={"field": "params", "missing": missing})
    if analysis.positional:
        marker = "$1" if db_type is DbType.POSTGRESQL else "%s"
        raise ValidationFailed(
            f"The SQL mixes named :name placeholders with positional {marker} markers: "
            "use one style (params as an object for :name, as an array for "
            f"{marker})", details={"field": "params"})
    pieces: list[str] = []
    at = 0
    if db_type is DbType.POSTGRESQL:
        number = {name: f"${index}" for index, name in enumerate(names, start=1)}
        for placeholder in analysis.placeholders:
            pieces += (sql[at:placeholder.start], number[placeholder.name])
            at = placeholder.end
        pieces.append(sql[at:])
        return "".join(pieces), [params[name] for name in names]
    # PyMySQL applies ``%`` formatting to the whole text: a literal ``%`` must be ``%%``.
    for placeholder in analysis.placeholders:
        pieces += (sql[at:placeholder.start].replace("%", "%%"), "%s")
        at = placeholder.end
    pieces.append(sql[at:].replace("%", "%%"))
    return "".join(pieces), [params[p.name] for p in analysis.placeholders]


def check_positional(analysis: Analysis, params: Sequence[Any], db_type: DbType) -> None:
    """MySQL: positional values may only fill ``%s`` markers outside literals and comments
    (PyMySQL formats the whole text with ``%``). PostgreSQL checks ``$n`` itself."""
    if db_type is DbType.POSTGRESQL:
        return
    if not analysis.percent_safe:
        raise ValidationFailed(
            "With positional params every %s must stand outside quotes and comments, and "
            "every other % must be written %%: a value is never placed inside a literal",
            details={"field": "params"})
    if analysis.positional != len(params):
        raise ValidationFailed(
            f"The SQL has {analysis.positional} %s marker(s) but {len(params)} value(s) "
            "were given", details={"field": "params"})
