"""A pooled connection found dead before a request sent anything on it.

Checkout refuses sockets the server is known to have closed and pings connections idle
past a short window; what slips through (the server closed it after checkout, or the
driver itself refused to write: each driver adapter's ``refused_before_send``) is raised
as ``SentNothing``, and only then may the
pool run the request again on a fresh connection: the server cannot have seen it.
A connection lost after a statement was written is never retried: the server may have
run it.
"""

from __future__ import annotations

from app.errors import DbUnavailable

__all__ = ["SentNothing"]


class SentNothing(DbUnavailable):
    """The connection was dead before anything was sent; safe to retry once elsewhere."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retry_after=0.1)
