"""What one statement does, from its tokens: its kind and its effects on the session.

The first word (after any opening parentheses) decides, refined by a few words after it
(``CREATE TEMPORARY``, ``ROLLBACK TO``, ``SET TRANSACTION``, ``EXPLAIN ANALYZE``, ...). A
read is ``read_only`` only when every function it calls is on the known-safe list; a
call that changes the session (``set_config``, advisory locks, MySQL ``@x := ...``)
makes it ``SESSION``, a call that writes (``nextval``) makes it ``WRITE``. Words the
classifier does not know give ``UNKNOWN``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from app.sql.kinds import StatementKind
from app.sql.lexer import Token
from app.sql.words import NOT_CALLS, SAFE_FUNCTIONS, SESSION_FUNCTIONS, WRITE_FUNCTIONS

__all__ = ["Verdict", "classify"]

K = StatementKind
_READ_WORDS = frozenset({"select", "values", "table"})
_WRITE_WORDS = frozenset({"insert", "update", "delete", "merge", "replace"})
_DDL_WORDS = frozenset({
    "create", "alter", "drop", "truncate", "grant", "revoke", "comment", "rename",
    "reindex", "cluster", "vacuum", "refresh", "security", "import", "reassign",
    "checkpoint", "optimize", "repair", "flush", "purge", "install", "uninstall",
    "cache", "change", "shutdown", "kill", "check", "checksum", "binlog", "restart",
})
_TEMP_WORDS = frozenset({"temp", "temporary"})
_PG_TX_SETTINGS = frozenset({
    "transaction_read_only", "default_transaction_read_only", "transaction_isolation",
    "default_transaction_isolation", "transaction_deferrable",
    "default_transaction_deferrable",
})
_MY_TX_SETTINGS = ("autocommit", "tx_", "transaction_", "completion_type")
_ROLLBACK_NOISE = frozenset({"work", "transaction"})
# Settings that change how later literals and identifiers read.
_SYNTAX_SETTINGS = frozenset({"sql_mode", "standard_conforming_strings", "backslash_quote"})


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: StatementKind
    read_only: bool = False
    touches_session: bool = True
    wipes_prepared: bool = False
    changes_syntax: bool = False


def classify(tokens: Sequence[Token], family: str) -> Verdict:
    """The verdict on one statement's tokens (no ``;``) in ``family``."""
    at = 0
    while at < len(tokens) and tokens[at].type == "(":
        at += 1
    words = _words(tokens, at)
    if not words:
        return Verdict(K.UNKNOWN)
    first = words[0]
    mysql = family == "mysql"
    if first in _READ_WORDS or (first == "with" and not _cte_writes(tokens)):
        return _read(tokens, mysql)
    if first == "with" or first in _WRITE_WORDS:
        return Verdict(K.WRITE)
    if first in ("show", "describe", "desc", "help"):
        return Verdict(K.READ, read_only=True, touches_session=False)
    if first == "explain" or (first == "analyze" and mysql and _second(words) != "table"):
        return _explain(tokens, at, words, family)
    if first == "do" and mysql:
        return _read(tokens, mysql)
    if first == "load":  # MySQL LOAD DATA / LOAD XML write; LOAD INDEX is administration
        if not mysql:
            return Verdict(K.UNKNOWN)
        return Verdict(K.DDL if _second(words) == "index" else K.WRITE)
    return _utility(tokens, words, mysql)


def _words(tokens: Sequence[Token], at: int, limit: int = 6) -> list[str]:
    """Up to ``limit`` leading bare words, lowercased (stops at anything else)."""
    out: list[str] = []
    for token in tokens[at:]:
        if token.type != "word" or len(out) == limit:
            break
        out.append(token.text.lower())
    return out


def _second(words: list[str]) -> str:
    return words[1] if len(words) > 1 else ""


def _utility(tokens: Sequence[Token], words: list[str], mysql: bool) -> Verdict:
    first, second = words[0], _second(words)
    if first in ("create", "drop") and (second in _TEMP_WORDS or (
            second in ("global", "local") and _second(words[1:]) in _TEMP_WORDS)):
        return Verdict(K.SESSION)
    if first in _DDL_WORDS or first == "analyze":  # ANALYZE [TABLE] t: statistics
        return Verdict(K.DDL)
    if first in ("savepoint", "release"):
        return Verdict(K.SAVEPOINT)
    if first == "rollback":
        rest = [w for w in words[1:] if w not in _ROLLBACK_NOISE]
        return Verdict(K.SAVEPOINT if rest[:1] == ["to"] else K.TRANSACTION)
    if first in ("commit", "end", "abort", "xa", "unlock"):
        return Verdict(K.TRANSACTION)
    if first == "begin":
        if mysql and second == "not":  # MariaDB ``BEGIN NOT ATOMIC``: a compound block
            return Verdict(K.UNKNOWN)
        return Verdict(K.TRANSACTION)
    if first == "start":
        return Verdict(K.TRANSACTION if second == "transaction" else K.UNKNOWN)
    if first == "prepare":
        return Verdict(K.TRANSACTION if second == "transaction" else K.SESSION)
    if first == "lock":
        # MySQL's LOCK TABLES commits the open transaction; PostgreSQL's LOCK holds a lock
        # until the transaction ends.
        return Verdict(K.TRANSACTION if mysql else K.SESSION)
    if first == "set":
        return _set(tokens, mysql)
    if first in ("deallocate", "discard"):
        rest = [w for w in words[1:] if w != "prepare"]
        wipes = not mysql and rest[:1] in (["all"], ["plans"])
        return Verdict(K.SESSION, wipes_prepared=wipes)
    if first == "reset" and mysql:  # RESET MASTER / QUERY CACHE ...: commits implicitly
        return Verdict(K.DDL)
    if first in ("reset", "listen", "unlisten", "notify", "declare", "fetch", "move",
                 "close", "use", "handler"):
        return Verdict(K.SESSION)
    return Verdict(K.UNKNOWN)  # CALL, DO, EXECUTE, COPY, ... may do anything


def _set(tokens: Sequence[Token], mysql: bool) -> Verdict:
    """``SET``: the most restrictive of its assignments (MySQL may list several)."""
    verdicts = [_assignment(target, mysql) for target in _set_targets(tokens)]
    strictest = max(verdicts, key=lambda v: v.kind.rank, default=Verdict(K.SESSION))
    if any(v.changes_syntax for v in verdicts):
        return Verdict(strictest.kind, changes_syntax=True)
    return strictest


def _set_targets(tokens: Sequence[Token]) -> list[list[str]]:
    """For each assignment: its leading words, ``@@scope.name`` spelled as words."""
    targets: list[list[str]] = []
    depth, fresh = 0, True
    for token in tokens[1:]:
        kind = token.type
        depth += (kind == "(") - (kind == ")")
        if kind == "," and depth == 0:
            fresh = True
            continue
        if fresh and kind in ("word", "var"):
            targets.append([])
            fresh = False
        if targets and len(targets[-1]) < 3 and kind in ("word", "var"):
            text = token.text.lower()
            targets[-1] += text.lstrip("@").split(".") if text.startswith("@@") else [text]
    return targets


def _assignment(words: list[str], mysql: bool) -> Verdict:
    if words[:1] in (["session"], ["local"], ["global"]):
        if words[0] == "global":
            return Verdict(K.DDL)  # the server's defaults, for everyone
        words = words[1:]
    target = words[0] if words else ""
    if target in ("transaction", "characteristics"):
        return Verdict(K.TRANSACTION)
    if target == "password":
        return Verdict(K.DDL)
    if mysql and target.startswith(_MY_TX_SETTINGS):
        return Verdict(K.TRANSACTION)  # ``SET autocommit = 1`` commits, too
    if not mysql and target in _PG_TX_SETTINGS:
        return Verdict(K.TRANSACTION)
    if mysql and target == "statement":
        return Verdict(K.UNKNOWN)  # MariaDB ``SET STATEMENT ... FOR <any statement>``
    return Verdict(K.SESSION, changes_syntax=target in _SYNTAX_SETTINGS)


def _explain(tokens: Sequence[Token], at: int, words: list[str], family: str) -> Verdict:
    """EXPLAIN alone plans; with ANALYZE (MariaDB: ``ANALYZE <statement>``) it runs."""
    index = at + 1
    analyze = words[0] == "analyze"
    if index < len(tokens) and tokens[index].type == "(":  # EXPLAIN (ANALYZE, ...)
        close = _closing(tokens, index)
        analyze = analyze or any(t.text.lower() == "analyze" for t in tokens[index:close])
        index = close + 1
    while index < len(tokens) and tokens[index].type == "word" and tokens[index].text.lower() in (
            "analyze", "analyse", "verbose", "extended", "partitions", "format", "costs"):
        analyze = analyze or tokens[index].text.lower() in ("analyze", "analyse")
        index += 1
    if not analyze:
        return Verdict(K.READ, read_only=True, touches_session=False)
    return classify(tokens[index:], family)


def _closing(tokens: Sequence[Token], opening: int) -> int:
    depth = 0
    for index in range(opening, len(tokens)):
        kind = tokens[index].type
        depth += (kind == "(") - (kind == ")")
        if depth == 0:
            return index
    return len(tokens) - 1


def _cte_writes(tokens: Sequence[Token]) -> bool:
    """A ``WITH`` whose body or main statement modifies data (INSERT ... in a CTE)."""
    depth = 0
    for index, token in enumerate(tokens):
        kind = token.type
        depth += (kind == "(") - (kind == ")")
        if kind != "word" or token.text.lower() not in _WRITE_WORDS:
            continue
        before = tokens[index - 1].type if index else ""
        after = tokens[index + 1].type if index + 1 < len(tokens) else ""
        if after != "(" and (before == "(" or (depth == 0 and before == ")")):
            return True
    return False


def _read(tokens: Sequence[Token], mysql: bool) -> Verdict:
    """A SELECT-like statement: its locking, INTO and calls decide."""
    kind, safe = K.READ, True
    for index, token in enumerate(tokens):
        kind_, text = token.type, token.text.lower()
        if kind_ == "assign" and mysql:
            kind = _stricter(kind, K.SESSION)  # ``@x := ...`` sets a user variable
        elif kind_ == "word" and text == "for" and _locks(tokens, index):
            kind = _stricter(kind, K.WRITE)
        elif kind_ == "word" and text == "into":
            kind = _stricter(kind, _into(tokens, index, mysql))
        elif kind_ == "word" and text == "lock" and mysql:  # LOCK IN SHARE MODE
            kind = _stricter(kind, K.WRITE)
        elif kind_ == "(" and index and tokens[index - 1].type == "word":
            name = tokens[index - 1].text.lower()
            if name in NOT_CALLS or name in SAFE_FUNCTIONS:
                continue
            safe = False
            if name in SESSION_FUNCTIONS:
                kind = _stricter(kind, K.SESSION)
            elif name in WRITE_FUNCTIONS:
                kind = _stricter(kind, K.WRITE)
    plain = kind is K.READ and safe
    return Verdict(kind, read_only=plain, touches_session=not plain)


def _locks(tokens: Sequence[Token], index: int) -> bool:
    """``FOR UPDATE`` / ``FOR SHARE`` / ``FOR NO KEY UPDATE`` / ``FOR KEY SHARE``."""
    after = [t.text.lower() for t in tokens[index + 1:index + 3] if t.type == "word"]
    return bool(after) and (after[0] in ("update", "share") or after[:2] in (
        ["no", "key"], ["key", "share"]))


def _into(tokens: Sequence[Token], index: int, mysql: bool) -> StatementKind:
    """SELECT ... INTO: PostgreSQL creates a table (a temporary one: the session);
    MySQL fills user variables (the session) or writes a file."""
    after = tokens[index + 1] if index + 1 < len(tokens) else None
    word = after.text.lower() if after is not None and after.type == "word" else ""
    if mysql:
        return K.WRITE if word in ("outfile", "dumpfile") else K.SESSION
    return K.SESSION if word in _TEMP_WORDS else K.DDL


def _stricter(a: StatementKind, b: StatementKind) -> StatementKind:
    return a if a.rank >= b.rank else b
