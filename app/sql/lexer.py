"""Tokenizers for the two dialect families: PostgreSQL, and MySQL/MariaDB.

Each is one compiled regular expression tried at the current offset (the alternatives in
order), plus a hand-written step for what a regular expression cannot count: PostgreSQL's
nested ``/* */`` comments and the closing tag of a ``$tag$`` string. Whitespace and
comments produce no token. What comes out is just enough for ``classify`` and ``bind``:

- ``word``: a bare identifier or keyword; ``qident``: a quoted identifier;
- ``string``: any literal in quotes (dollar-quoted too); ``number``;
- ``param``: a real ``:name`` placeholder (never inside a literal, a quoted identifier or
  a comment, never the ``::`` of a cast, the colon of an array slice ``a[1:n]`` or a
  colon glued to a name before it, like the label ``lbl:BEGIN``);
- ``positional``: ``$1`` (PostgreSQL), ``%s`` (MySQL); ``var``: MySQL ``@x``/``@@x``;
- ``(`` ``)`` ``[`` ``]`` ``;`` ``,`` ``.``; ``op`` for every other operator or character.

MySQL's executable comments ``/*! ... */`` and ``/*M! ... */`` are code (their content is
tokenized, the markers dropped); ``/*+ ... */`` hints and other comments are skipped.
An unterminated literal, quoted identifier or comment raises ``LexError``.
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = ["LexError", "Token", "tokenize"]


class LexError(ValueError):
    """The text ends inside a literal, quoted identifier or comment."""


class Token(NamedTuple):
    type: str
    text: str
    start: int


_IDENT_START = r"[^\W\d]"


def _pg_pattern(backslash_escapes: bool) -> re.Pattern[str]:
    """PostgreSQL's tokens; ``backslash_escapes`` True when ``standard_conforming_strings``
    is off (a backslash then escapes inside plain ``'...'`` too)."""
    plain = r"'(?:[^'\\]+|\\.|'')*+'" if backslash_escapes else r"'(?:[^']+|'')*+'"
    return re.compile(
        r"""
    \s*(?:(?P<ws>\Z)
  | (?P<comment>--[^\n]*)
  | (?P<block>/\*)
  | (?P<string>[Ee]'(?:[^'\\]+|\\.|'')*+'
      | [Uu]&'(?:[^']+|'')*+'
      | """
        + plain
        + r""")
  | (?P<qident>(?:[Uu]&)?"(?:[^"]+|"")*+")
  | (?P<dollar>\$(?:"""
    + _IDENT_START
    + r"""\w*)?\$)
  | (?P<positional>\$\d+)
  | (?P<word>(?![Ee]'|[Uu]&['"])"""
    + _IDENT_START
    + r"""[\w$]*)
  | (?P<number>(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)(?:[Ee][+-]?\d+)?)
  | (?P<cast>::)
  | (?P<assign>:=)
  | (?P<param>:"""
    + _IDENT_START
    + r"""\w*)
  | (?P<punct>[()\[\];,.:])
  | (?P<op>(?:[+*<>=~!@\#%^&|`?]|-(?!-)|/(?!\*))+)
  | (?P<open>[Ee]'|[Uu]&['"]|['"])
  | (?P<other>.))
    """,
        re.VERBOSE | re.DOTALL,
    )


def _mysql_pattern(backslash_escapes: bool) -> re.Pattern[str]:
    """MySQL/MariaDB's tokens; ``backslash_escapes`` False for ``NO_BACKSLASH_ESCAPES``."""
    escape = r"|\\." if backslash_escapes else ""
    exclude = "\\\\" if backslash_escapes else ""
    single = f"'(?:[^'{exclude}]+{escape}|'')*+'"
    double = f'"(?:[^"{exclude}]+{escape}|"")*+"'
    return re.compile(
        r"""
        \s*(?:(?P<ws>\Z)
      | (?P<comment>(?:\#|--(?=[\s\x00-\x1f]|\Z))[^\n]*)
      | (?P<exec>/\*M?!\d{0,6})
      | (?P<block>/\*)
      | (?P<execend>\*/)
      | (?P<string>[Nn]?"""
        + single
        + "|"
        + double
        + r""")
      | (?P<qident>`(?:[^`]+|``)*+`)
      | (?P<var>@@?(?:[\w$.]+|"""
        + single
        + "|"
        + double
        + r"""|`(?:[^`]+|``)*+`)?)
      | (?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[Ee][+-]?\d+)?(?![\w$]))
      | (?P<word>[\w$]+)
      | (?P<assign>:=)
      | (?P<param>:"""
        + _IDENT_START
        + r"""\w*)
      | (?P<positional>%s)
      | (?P<percent>%%)
      | (?P<punct>[()\[\];,.:])
      | (?P<op>(?:[+*<>=~!&|^%/]|-(?!-(?:[\s\x00-\x1f]|\Z)))+)
      | (?P<open>['"`])
      | (?P<other>.))
        """,
        re.VERBOSE | re.DOTALL,
    )


_PG = _pg_pattern(backslash_escapes=False)
_PG_NSC = _pg_pattern(backslash_escapes=True)
_MY = _mysql_pattern(backslash_escapes=True)
_MY_NBE = _mysql_pattern(backslash_escapes=False)
_PATTERNS = {"postgresql": _PG, "postgresql-nsc": _PG_NSC, "mysql": _MY, "mysql-nbe": _MY_NBE}
_MY_OP_STOP = re.compile(r"\*/")


def tokenize(sql: str, family: str) -> list[Token]:
    """The tokens of ``sql`` in ``family``: ``"postgresql"`` (``"postgresql-nsc"`` with
    ``standard_conforming_strings`` off), ``"mysql"`` (``"mysql-nbe"`` when ``sql_mode``
    has ``NO_BACKSLASH_ESCAPES``)."""
    pattern = _PATTERNS[family]
    if family.startswith("postgresql"):
        return _tokenize_pg(sql, pattern)
    return _tokenize_my(sql, pattern)


def _tokenize_pg(sql: str, pattern: re.Pattern[str]) -> list[Token]:
    tokens: list[Token] = []
    match = pattern.match
    at, size, brackets = 0, len(sql), 0
    while at < size:
        found = match(sql, at)
        assert found is not None  # ``other`` takes any character
        kind, end = found.lastgroup, found.end()
        at = found.start(kind or 0)
        if kind == "ws" or kind == "comment":
            pass
        elif kind == "block":
            end = _pg_block_end(sql, at)
        elif kind == "dollar":
            tag = found.group(kind or 0)
            close = sql.find(tag, end)
            if close < 0:
                raise LexError(f"unterminated dollar-quoted string {tag} at offset {at}")
            end = close + len(tag)
            tokens.append(Token("string", sql[at:end], at))
        elif kind == "open":
            raise LexError(f"unterminated quoted text starting at offset {at}")
        else:
            text = found.group(kind or 0)
            if kind == "punct":
                kind = text
                if text == "[":
                    brackets += 1
                elif text == "]":
                    brackets = max(0, brackets - 1)
            elif kind == "param" and (_glued(sql, at) or (brackets and _ends_operand(tokens))):
                # ``x:y`` or a slice ``a[lo:hi]``: a colon, then an identifier.
                tokens += (Token(":", ":", at), Token("word", text[1:], at + 1))
                at = end
                continue
            tokens.append(Token("op" if kind == "other" else kind or "op", text, at))
        at = end
    return tokens


def _glued(sql: str, at: int) -> bool:
    """The colon at ``at`` follows a name with no space (``lbl:BEGIN``): not a placeholder."""
    return at > 0 and (sql[at - 1].isalnum() or sql[at - 1] in "_$")


def _ends_operand(tokens: list[Token]) -> bool:
    return bool(tokens) and tokens[-1].type in ("word", "qident", "number", "string", ")",
                                                 "]", "param", "positional")


def _pg_block_end(sql: str, at: int) -> int:
    """The offset after the ``/* */`` comment at ``at``, nested comments included."""
    depth, pos = 0, at
    while True:
        opening, closing = sql.find("/*", pos), sql.find("*/", pos)
        if closing < 0:
            raise LexError(f"unterminated /* comment starting at offset {at}")
        if 0 <= opening < closing:
            depth, pos = depth + 1, opening + 2
            continue
        depth, pos = depth - 1, closing + 2
        if depth == 0:
            return pos


def _tokenize_my(sql: str, pattern: re.Pattern[str]) -> list[Token]:
    tokens: list[Token] = []
    match = pattern.match
    at, size, executable = 0, len(sql), 0
    while at < size:
        found = match(sql, at)
        assert found is not None  # ``other`` takes any character
        kind, end = found.lastgroup, found.end()
        at = found.start(kind or 0)
        if kind == "ws" or kind == "comment":
            pass
        elif kind == "exec":
            executable += 1
        elif kind == "block":
            close = sql.find("*/", end)
            if close < 0:
                raise LexError(f"unterminated /* comment starting at offset {at}")
            end = close + 2
        elif kind == "execend":
            if executable:
                executable -= 1
            else:  # ``*/`` outside a comment: the operators ``*`` and ``/``
                tokens.append(Token("op", "*/", at))
        elif kind == "open":
            raise LexError(f"unterminated quoted text starting at offset {at}")
        else:
            text = found.group(kind or 0)
            if kind == "punct":
                kind = text
            elif kind == "param" and _glued(sql, at):  # a label: ``lbl:BEGIN``
                tokens += (Token(":", ":", at), Token("word", text[1:], at + 1))
                at = end
                continue
            elif kind == "op" and executable and "*/" in text:
                # ``1*/`` inside ``/*! ... */``: the operator stops where the comment ends.
                end = at + _MY_OP_STOP.search(text).start()  # type: ignore[union-attr]
                text = sql[at:end]
                if not text:
                    continue
            tokens.append(Token("op" if kind == "other" else kind or "op", text, at))
        at = end
    if executable:
        raise LexError("unterminated /*! comment")
    return tokens
