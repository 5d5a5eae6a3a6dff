"""``analyse(sql, db_type)``: the tokens of one request's SQL, split into statements and
classified, cached per (dialect family, text) in a bounded LRU (see ``app.sql``)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from functools import lru_cache

from app.domain import DbType
from app.sql.classify import classify
from app.sql.kinds import StatementKind
from app.sql.lexer import LexError, Token, tokenize

__all__ = [
    "CACHED_UP_TO",
    "CACHE_SIZE",
    "Analysis",
    "Placeholder",
    "analyse",
    "default_escapes",
    "family_of",
]

log = logging.getLogger(__name__)

CACHE_SIZE = 2048  # distinct SQL texts kept per process
CACHED_UP_TO = 16_384  # longer texts are analysed every time: the cache stays small
_PERCENT = re.compile(r"%(.|\Z)", re.DOTALL)
_BLOCK_ENDS = frozenset({"if", "loop", "while", "repeat"})


@dataclass(frozen=True, slots=True)
class Placeholder:
    """A real ``:name`` placeholder: ``sql[start:end] == ":" + name``."""

    name: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Analysis:
    """What the analyser found in one request's SQL text."""

    # The most restrictive kind among the statements (``UNKNOWN`` when it cannot tell).
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
    # Sets what decides how later text reads (MySQL sql_mode, PostgreSQL
    # standard_conforming_strings / backslash_quote).
    changes_syntax: bool = False
    # Each statement's own kind, in order.
    kinds: tuple[StatementKind, ...] = ()
    # The driver's positional markers outside literals: ``$n`` / ``%s``.
    positional: int = 0
    # MySQL: every ``%`` of the text is ``%%`` or one of those ``%s`` markers, so the
    # driver's ``%`` interpolation of positional values can only fill the markers.
    percent_safe: bool = True
    # Why the text could not be tokenized (an unterminated literal ...); kind is UNKNOWN.
    error: str | None = None

    @property
    def names(self) -> tuple[str, ...]:
        """Distinct placeholder names in order of first appearance."""
        return tuple(dict.fromkeys(p.name for p in self.placeholders))


def default_escapes(db_type: DbType) -> bool:
    """Whether a backslash escapes inside plain ``'...'`` literals by default: yes on
    MySQL/MariaDB, no on PostgreSQL (``standard_conforming_strings`` on)."""
    return db_type.is_mysql_family


def family_of(db_type: DbType, *, backslash_escapes: bool | None = None) -> str:
    """The dialect family and its literal rules: ``"postgresql"`` (``"postgresql-nsc"``
    when backslashes escape), ``"mysql"`` (``"mysql-nbe"`` when they do not)."""
    if backslash_escapes is None:
        backslash_escapes = default_escapes(db_type)
    if db_type.is_mysql_family:
        return "mysql" if backslash_escapes else "mysql-nbe"
    return "postgresql-nsc" if backslash_escapes else "postgresql"


def analyse(sql: str, db_type: DbType, *, backslash_escapes: bool | None = None) -> Analysis:
    """The analysis of ``sql`` in ``db_type``'s dialect (cached per dialect and text).
    ``backslash_escapes``: whether a backslash escapes inside plain ``'...'`` literals in
    this session (MySQL ``NO_BACKSLASH_ESCAPES`` turns it off, PostgreSQL
    ``standard_conforming_strings = off`` on); None: the dialect's default.

    Never raises: text it cannot tokenize is ``UNKNOWN`` with ``error`` set."""
    family = family_of(db_type, backslash_escapes=backslash_escapes)
    if len(sql) > CACHED_UP_TO:
        return _analyse(sql, family)
    return _cached(sql, family)


def _analyse(sql: str, family: str) -> Analysis:
    try:
        return _read(sql, family)
    except LexError as exc:
        return _unreadable(str(exc))
    except Exception:  # a bug here must not become a 500: the most restrictive answer
        log.exception("the statement analyser failed on a %d-character text", len(sql))
        return _unreadable("the analyser could not read it")


def _unreadable(reason: str) -> Analysis:
    return Analysis(kind=StatementKind.UNKNOWN, statement_count=0, placeholders=(),
                    read_only=False, touches_session=True, wipes_prepared=False, kinds=(),
                    error=reason)


def _read(sql: str, family: str) -> Analysis:
    tokens = tokenize(sql, family)
    dialect = "mysql" if family.startswith("mysql") else "postgresql"
    verdicts = [classify(statement, dialect) for statement in _statements(tokens)]
    kind = max((v.kind for v in verdicts), key=lambda k: k.rank, default=StatementKind.UNKNOWN)
    positional = sum(1 for t in tokens if t.type == "positional")
    return Analysis(
        kind=kind,
        statement_count=len(verdicts),
        placeholders=tuple(
            Placeholder(t.text[1:], t.start, t.start + len(t.text))
            for t in tokens if t.type == "param"
        ),
        read_only=bool(verdicts) and all(v.read_only for v in verdicts),
        touches_session=not verdicts or any(v.touches_session for v in verdicts),
        wipes_prepared=any(v.wipes_prepared for v in verdicts),
        changes_syntax=any(v.changes_syntax for v in verdicts),
        kinds=tuple(v.kind for v in verdicts),
        positional=positional,
        percent_safe=dialect != "mysql" or _percent_safe(sql, positional),
    )


_cached = lru_cache(maxsize=CACHE_SIZE)(_analyse)


def _statements(tokens: list[Token]) -> list[list[Token]]:
    """Split at ``;`` outside parentheses and outside a routine body (``BEGIN ... END`` of
    a CREATE FUNCTION/PROCEDURE/TRIGGER or MariaDB's ``BEGIN NOT ATOMIC``); empty
    statements (a trailing ``;``, only comments) do not count."""
    statements: list[list[Token]] = []
    current: list[Token] = []
    parens = blocks = 0
    for index, token in enumerate(tokens):
        kind = token.type
        if kind == ";" and parens == 0 and blocks == 0:
            if current:
                statements.append(current)
            current = []
            continue
        if kind == "(":
            parens += 1
        elif kind == ")":
            parens = max(0, parens - 1)
        elif kind == "word":
            blocks = _block_depth(token, current, tokens, index, blocks)
        current.append(token)
    if current:
        statements.append(current)
    return statements


def _block_depth(token: Token, current: list[Token], tokens: list[Token], index: int,
                 blocks: int) -> int:
    word = token.text.lower()
    if word == "begin":
        following = tokens[index + 1].text.lower() if index + 1 < len(tokens) else ""
        # A leading BEGIN opens a transaction, unless it is ``BEGIN NOT ATOMIC``.
        return blocks + 1 if current or following == "not" else blocks
    if blocks and word == "case":
        return blocks + 1
    if blocks and word == "end":
        following = tokens[index + 1].text.lower() if index + 1 < len(tokens) else ""
        return blocks if following in _BLOCK_ENDS else blocks - 1
    return blocks


def _percent_safe(sql: str, markers: int) -> bool:
    found = 0
    for match in _PERCENT.finditer(sql):
        directive = match.group(1)
        if directive == "s":
            found += 1
        elif directive != "%":
            return False
    return found == markers

