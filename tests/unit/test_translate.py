"""translate_error: driver and SQLAlchemy exceptions -> the service's error tree.

The exception objects are the drivers' own classes, built as the drivers build them;
the integration tests provoke the same errors on the real servers.
"""

from __future__ import annotations

import asyncpg
import pymysql
import pytest
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
from app.pools.translate import translate_error

PG = DbType.POSTGRESQL
SECRET = "s3cr3t-Pw-xyz"


def pg_error(cls: type[asyncpg.PostgresError], message: str) -> BaseException:
    """As SQLAlchemy raises it: DBAPIError(orig=adapter error) from the asyncpg error."""
    driver = cls(message)
    adapted = Exception(message)
    adapted.__cause__ = driver
    return sa_exc.DBAPIError("SELECT :p", {"p": SECRET}, adapted)


def my_error(cls: type[pymysql.MySQLError], errno: int, message: str,
             sqlstate: str | None = None) -> BaseException:
    driver = cls(errno, message, sqlstate=sqlstate)  # type: ignore[call-arg]
    return sa_exc.DBAPIError("SELECT %s", (SECRET,), driver)


@pytest.mark.parametrize(
    ("cls", "expected"),
    [
        (asyncpg.InvalidPasswordError, DbAuthFailed),
        (asyncpg.InvalidAuthorizationSpecificationError, DbAuthFailed),
        (asyncpg.AdminShutdownError, DbUnavailable),
        (asyncpg.CrashShutdownError, DbUnavailable),
        (asyncpg.CannotConnectNowError, DbUnavailable),
        (asyncpg.TooManyConnectionsError, DbUnavailable),
        (asyncpg.ConnectionDoesNotExistError, DbUnavailable),
        (asyncpg.QueryCanceledError, QueryTimeout),
        (asyncpg.ReadOnlySQLTransactionError, ReadOnlyViolation),
        (asyncpg.PostgresSyntaxError, QueryError),
        (asyncpg.UniqueViolationError, QueryError),
    ],
)
def test_postgres_sqlstates(cls: type[asyncpg.PostgresError], expected: type) -> None:
    error = translate_error(pg_error(cls, "the server said so"), PG)
    assert type(error) is expected
    assert error.details["sqlstate"] == cls.sqlstate
    assert SECRET not in str(error) and SECRET not in repr(error.details)


def test_query_error_carries_the_database_message() -> None:
    error = translate_error(pg_error(asyncpg.PostgresSyntaxError, 'syntax error at "SELEC"'), PG)
    assert error.code == "QUERY_ERROR" and error.status == 400
    assert error.details["databaseMessage"] == 'syntax error at "SELEC"'
    assert 'syntax error at "SELEC"' in error.message


@pytest.mark.parametrize(
    ("errno", "expected"),
    [
        (1045, DbAuthFailed), (1044, DbAuthFailed), (1698, DbAuthFailed),
        (2003, DbUnavailable), (2006, DbUnavailable), (2013, DbUnavailable),
        (1040, DbUnavailable), (1969, QueryTimeout), (3024, QueryTimeout), (1317, QueryTimeout),
        (1792, ReadOnlyViolation), (1290, ReadOnlyViolation), (1064, QueryError),
        (1146, QueryError), (1062, QueryError),
    ],
)
@pytest.mark.parametrize("db_type", [DbType.MYSQL, DbType.MARIADB])
def test_mysql_errnos(errno: int, expected: type, db_type: DbType) -> None:
    error = translate_error(my_error(pymysql.err.OperationalError, errno, "said", "HY000"), db_type)
    assert type(error) is expected
    assert error.details["errno"] == errno and error.details["sqlstate"] == "HY000"


def test_os_errors_and_timeouts_are_unavailable() -> None:
    refused = translate_error(ConnectionRefusedError(111, "Connection refused"), PG)
    assert isinstance(refused, DbUnavailable) and refused.retry_after
    assert isinstance(translate_error(TimeoutError(), DbType.MYSQL), DbUnavailable)
    unreachable = OSError(113, "No route to host")
    assert isinstance(translate_error(unreachable, PG), DbUnavailable)


def test_pool_timeout_is_pool_exhausted() -> None:
    assert isinstance(translate_error(sa_exc.TimeoutError("QueuePool limit"), PG), PoolExhausted)


def test_own_errors_pass_through() -> None:
    own = QueryTimeout("x")
    assert translate_error(own, PG) is own


def test_unknown_is_internal_and_says_nothing() -> None:
    error = translate_error(RuntimeError(f"password={SECRET}"), PG)
    assert type(error) is DatabaseError and error.code == "INTERNAL_ERROR"
    assert SECRET not in error.message


def test_secrets_dsns_and_argument_values_are_scrubbed() -> None:
    message = f"could not connect to postgresql://u:{SECRET}@db:5432/x with {SECRET}"
    error = translate_error(pg_error(asyncpg.PostgresSyntaxError, message), PG, secrets=[SECRET])
    assert SECRET not in error.message and SECRET not in repr(error.details)
    data_error = asyncpg.exceptions._base.DataError(  # asyncpg's client-side encoding error
        f"invalid input for query argument $1: '{SECRET}' (expected str, got int)")
    wrapped = sa_exc.DBAPIError("SELECT $1", (SECRET,), data_error)
    error = translate_error(wrapped, PG)
    assert isinstance(error, QueryError)
    assert SECRET not in error.message
    assert "invalid input for query argument $1 (expected str, got int)" in error.message
