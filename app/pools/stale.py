"""A pooled connection found dead before a request sent anything on it.

Checkout refuses sockets the server is known to have closed and pings connections idle
past a short window; what slips through (the server closed it after checkout, or the
driver itself refused to write) is raised as ``SentNothing``, and only then may the
pool run the request again on a fresh connection: the server cannot have seen it.
A connection lost after a statement was written is never retried: the server may have
run it.
"""

from __future__ import annotations

import asyncpg
import pymysql

from app.errors import DbUnavailable

__all__ = ["SentNothing", "refused_before_send"]


class SentNothing(DbUnavailable):
    """The connection was dead before anything was sent; safe to retry once elsewhere."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retry_after=0.1)


def _asyncmy_interface_error() -> type[BaseException] | None:
    try:
        from asyncmy.errors import InterfaceError
    except ImportError:  # the optional driver is not installed
        return None
    return InterfaceError


_ASYNCMY_INTERFACE_ERROR = _asyncmy_interface_error()


def refused_before_send(exc: BaseException) -> bool:
    """True for the drivers' "connection is closed" refusals, raised before any write.

    asyncpg checks ``is_closed()`` (and its protocol state) before sending; aiomysql and
    asyncmy raise ``InterfaceError`` ("Not connected") from their alive-check before
    writing. Anything else -- notably a connection lost while waiting for the answer --
    is not proof, and is not retried.
    """
    if isinstance(exc, asyncpg.InterfaceError):
        return str(exc).endswith("connection is closed")
    if isinstance(exc, pymysql.err.InterfaceError):
        return True
    return _ASYNCMY_INTERFACE_ERROR is not None and isinstance(exc, _ASYNCMY_INTERFACE_ERROR)
