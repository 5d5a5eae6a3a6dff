"""Driver and SQLAlchemy exceptions -> the service's own ``DatabaseError`` tree.

The one place that knows asyncpg's SQLSTATEs and MySQL/MariaDB's errnos. Messages carry
the database's own words but never a password, a DSN or a bound parameter::

    DbAuthFailed       PG 28P01/28000 · MySQL 1044/1045/1698
    DbUnavailable      refused / unreachable / connect timeout / lost connection,
                       PG class 08, 53300, 57P01-57P03 · MySQL 1040/1203/2002/2003/2006/2013/2055
    PoolExhausted      SQLAlchemy's pool timeout
    QueryTimeout       PG 57014 · MariaDB 1969 · MySQL 3024 · 1317 (KILL QUERY)
    ReadOnlyViolation  PG 25006 · MySQL 1290/1792
    QueryError         anything else the database (or the driver, for the SQL) rejected
    DatabaseError      (INTERNAL_ERROR) an exception we cannot classify
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Callable, Iterable
from typing import Any

import sqlalchemy.exc as sa_exc

from app.domain import DbType
from app.errors import (
    DatabaseError,
    DbAuthFailed,
    DbUnavailable,
    PoolExhausted,
    QueryError,
    QueryTimeout,
    ReadOnlyViolation,
)

__all__ = ["translate_error"]

Scrub = Callable[[str], str]

_PG_AUTH = frozenset({"28P01", "28000"})
_PG_UNAVAILABLE = frozenset({"53300", "57P01", "57P02", "57P03"})
_PG_TIMEOUT = frozenset({"57014"})
_PG_READ_ONLY = frozenset({"25006"})

_MY_AUTH = frozenset({1044, 1045, 1698})
_MY_UNAVAILABLE = frozenset({1040, 1203, 2002, 2003, 2005, 2006, 2013, 2055})
_MY_TIMEOUT = frozenset({1317, 1969, 3024})
_MY_READ_ONLY = frozenset({1290, 1792})

# Scrubbers for text that might echo a secret: URLs with credentials, and asyncpg's
# client-side "invalid input for query argument $1: <value> (...)".
_DSN = re.compile(r"\b[a-zA-Z][\w+.-]*://[^\s/@]*@[^\s]*")
_ARGUMENT_VALUE = re.compile(
    r"(invalid input for query argument \$\d+):.*?(\s\((?:expected|invalid)[^()]*\))?\Z",
    re.DOTALL,
)
_MAX_MESSAGE = 2000


def translate_error(
    exc: BaseException, db_type: DbType, *, secrets: Iterable[str] = ()
) -> DatabaseError:
    """The most specific ``DatabaseError`` for ``exc``; raise it ``from exc``.

    ``secrets`` (the connection's password) are removed from any text kept: pass them for
    errors raised while connecting, where a driver may echo a DSN, and never for a statement's
    error, whose text is the caller's own SQL (hiding the password there would tell the
    caller which of its guesses is the password).
    """
    if isinstance(exc, DatabaseError):
        return exc
    if isinstance(exc, sa_exc.TimeoutError):
        return PoolExhausted("No database connection became free in time", retry_after=1.0)
    driver = _driver_exception(exc)
    scrub = _scrubber(secrets)
    from_driver = _from_mysql if db_type.is_mysql_family else _from_postgres
    return from_driver(driver, scrub) or _from_generic(exc, driver, scrub)


def _driver_exception(exc: BaseException) -> BaseException:
    """The driver's own exception under SQLAlchemy's and the asyncpg adapter's wrappers."""
    inner: BaseException = exc
    if isinstance(exc, sa_exc.StatementError) and exc.orig is not None:
        inner = exc.orig
    # SQLAlchemy's asyncpg adapter raises its own DBAPI classes "from" the asyncpg error.
    cause = inner.__cause__
    if cause is not None and type(cause).__module__.startswith("asyncpg"):
        return cause
    return inner


def _scrubber(secrets: Iterable[str]) -> Scrub:
    hidden = [s for s in secrets if s]

    def scrub(text: str) -> str:
        text = _DSN.sub("[dsn hidden]", text)
        text = _ARGUMENT_VALUE.sub(lambda m: m.group(1) + (m.group(2) or ""), text)
        for secret in hidden:
            text = text.replace(secret, "[hidden]")
        return text[:_MAX_MESSAGE]

    return scrub


def _from_postgres(driver: BaseException, scrub: Scrub) -> DatabaseError | None:
    sqlstate = getattr(driver, "sqlstate", None)
    if not isinstance(sqlstate, str):
        return None
    text = scrub(_pg_message(driver))
    details = _pg_details(driver, sqlstate, text, scrub)
    if sqlstate in _PG_AUTH:
        return DbAuthFailed("The database refused the credentials", details=details)
    if sqlstate in _PG_UNAVAILABLE or sqlstate.startswith("08"):
        return DbUnavailable(
            f"The database is unavailable: {text}", details=details, retry_after=1.0
        )
    if sqlstate in _PG_TIMEOUT:
        return QueryTimeout("The statement ran past its timeout and was cancelled", details=details)
    if sqlstate in _PG_READ_ONLY:
        return ReadOnlyViolation("The connection is read-only", details=details)
    return QueryError(f"The database rejected the statement: {text}", details=details)


def _pg_message(driver: BaseException) -> str:
    message = getattr(driver, "message", None)
    if isinstance(message, str) and message:
        return message
    return str(driver.args[0]) if driver.args else type(driver).__name__


def _pg_details(driver: BaseException, sqlstate: str, text: str, scrub: Scrub) -> dict[str, Any]:
    details: dict[str, Any] = {"sqlstate": sqlstate, "databaseMessage": text}
    # ``detail`` is left out on purpose: it echoes row values ("Key (id)=(1) exists").
    for attr, key in (("hint", "hint"), ("position", "position"),
                      ("constraint_name", "constraint"), ("table_name", "table")):
        value = getattr(driver, attr, None)
        if value:
            text = scrub(str(value))
            details[key] = int(text) if text.isdigit() else text
    return details


def _from_mysql(driver: BaseException, scrub: Scrub) -> DatabaseError | None:
    args: tuple[Any, ...] = getattr(driver, "args", ())
    if len(args) < 2 or not isinstance(args[0], int):
        return None
    errno: int = args[0]
    text = scrub(str(args[1]) + _tls_reason(driver))
    details: dict[str, Any] = {"errno": errno, "databaseMessage": text}
    sqlstate = getattr(driver, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate:
        details["sqlstate"] = sqlstate
    if errno in _MY_AUTH:
        return DbAuthFailed("The database refused the credentials", details=details)
    if errno in _MY_UNAVAILABLE:
        return DbUnavailable(
            f"The database is unavailable: {text}", details=details, retry_after=1.0
        )
    if errno in _MY_TIMEOUT:
        return QueryTimeout("The statement ran past its timeout and was cancelled", details=details)
    if errno in _MY_READ_ONLY:
        return ReadOnlyViolation("The connection is read-only", details=details)
    if errno >= 2000:  # client-side (CR_*) errors are about the link, not the SQL
        return DbUnavailable(
            f"The database connection failed: {text}", details=details, retry_after=1.0
        )
    return QueryError(f"The database rejected the statement: {text}", details=details)


def _tls_reason(driver: BaseException) -> str:
    """The TLS failure behind a MySQL driver's generic "Can't connect" (its ``__cause__``)."""
    cause = driver.__cause__
    if isinstance(cause, ssl.SSLCertVerificationError):
        return f" (TLS: certificate verify failed: {cause.verify_message})"
    if isinstance(cause, ssl.SSLError):
        return f" (TLS: {cause.reason or type(cause).__name__})"
    return ""


def _from_generic(exc: BaseException, driver: BaseException, scrub: Scrub) -> DatabaseError:
    if isinstance(driver, TimeoutError):
        return DbUnavailable("Connecting to the database timed out", retry_after=1.0)
    if isinstance(driver, OSError):
        reason = driver.strerror or type(driver).__name__
        return DbUnavailable(f"Cannot reach the database: {scrub(reason)}", retry_after=1.0)
    name = type(driver).__name__
    if _is_connection_loss(driver):
        return DbUnavailable(f"The database connection was lost ({name})", retry_after=1.0)
    if isinstance(exc, sa_exc.StatementError) or _is_client_sql_error(driver):
        # Rejected before it reached the server: a missing bind parameter, a wrong
        # argument count or type. The text names the parameter, never its value.
        return QueryError(f"The statement was rejected: {scrub(_first_line(driver))}")
    return DatabaseError(f"Unexpected database driver error ({name})")


def _is_connection_loss(driver: BaseException) -> bool:
    name = type(driver).__name__
    return name in {"ConnectionDoesNotExistError", "ConnectionResetError", "InternalClientError"}


def _is_client_sql_error(driver: BaseException) -> bool:
    module = type(driver).__module__
    return module.startswith(("asyncpg", "pymysql", "aiomysql", "asyncmy"))


def _first_line(exc: BaseException) -> str:
    text = str(exc.args[0]) if exc.args else type(exc).__name__
    return text.splitlines()[0] if text else type(exc).__name__
