"""The error tree. Every error has a stable ``code`` and an HTTP ``status``.

Driver, SQLAlchemy and crypto exceptions are translated into these at the boundary
where they happen (``raise Own(...) from exc``); ``api/errors.py`` is the one place
they become responses::

    DbPoolError
    ├── ValidationFailed          VALIDATION_ERROR        422
    ├── PayloadTooLarge           PAYLOAD_TOO_LARGE       413
    ├── RequestTimeout            REQUEST_TIMEOUT         408
    ├── ResultTooLarge            RESULT_TOO_LARGE        413
    ├── RouteNotFound             NOT_FOUND               404
    ├── MethodNotAllowed          METHOD_NOT_ALLOWED      405
    ├── Unauthorized              UNAUTHORIZED            401
    ├── Forbidden                 FORBIDDEN               403
    ├── HostNotAllowed            HOST_NOT_ALLOWED        403
    ├── ConnectionNotFound        CONNECTION_NOT_FOUND    404
    ├── ConnectionInactive        CONNECTION_INACTIVE     409
    ├── ConnectionNameTaken       CONNECTION_NAME_TAKEN   409
    ├── TableNotFound             TABLE_NOT_FOUND         404
    ├── CredentialsUnreadable     CREDENTIALS_UNREADABLE  500
    ├── RegistryUnavailable       REGISTRY_UNAVAILABLE    503 + Retry-After
    ├── InternalError             INTERNAL_ERROR          500
    └── DatabaseError             (talking to an external database failed)
        ├── PoolExhausted         POOL_EXHAUSTED          503 + Retry-After
        ├── DbUnavailable         DB_UNAVAILABLE          503 + Retry-After
        ├── DbAuthFailed          DB_AUTH_FAILED          502
        ├── QueryTimeout          QUERY_TIMEOUT           504
        ├── QueryError            QUERY_ERROR             400
        └── ReadOnlyViolation     READ_ONLY               403
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

__all__ = [
    "ConnectionInactive",
    "ConnectionNameTaken",
    "ConnectionNotFound",
    "CredentialsUnreadable",
    "DatabaseError",
    "DbAuthFailed",
    "DbPoolError",
    "DbUnavailable",
    "Forbidden",
    "HostNotAllowed",
    "InternalError",
    "MethodNotAllowed",
    "PayloadTooLarge",
    "PoolExhausted",
    "QueryError",
    "QueryTimeout",
    "ReadOnlyViolation",
    "RegistryUnavailable",
    "RequestTimeout",
    "ResultTooLarge",
    "RouteNotFound",
    "TableNotFound",
    "Unauthorized",
    "ValidationFailed",
]


class DbPoolError(Exception):
    """Base of every error the service reports; ``str()`` is safe to show to a caller."""

    code: ClassVar[str] = "INTERNAL_ERROR"
    status: ClassVar[int] = 500

    def __init__(
        self,
        message: str,
        *,
        details: Mapping[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = dict(details or {})
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class ValidationFailed(DbPoolError):
    code = "VALIDATION_ERROR"
    status = 422


class PayloadTooLarge(DbPoolError):
    code = "PAYLOAD_TOO_LARGE"
    status = 413


class RequestTimeout(DbPoolError):
    code = "REQUEST_TIMEOUT"
    status = 408


class ResultTooLarge(DbPoolError):
    code = "RESULT_TOO_LARGE"
    status = 413


class RouteNotFound(DbPoolError):
    code = "NOT_FOUND"
    status = 404


class MethodNotAllowed(DbPoolError):
    code = "METHOD_NOT_ALLOWED"
    status = 405


class Unauthorized(DbPoolError):
    code = "UNAUTHORIZED"
    status = 401


class Forbidden(DbPoolError):
    code = "FORBIDDEN"
    status = 403


class HostNotAllowed(DbPoolError):
    code = "HOST_NOT_ALLOWED"
    status = 403


class ConnectionNotFound(DbPoolError):
    code = "CONNECTION_NOT_FOUND"
    status = 404


class ConnectionInactive(DbPoolError):
    code = "CONNECTION_INACTIVE"
    status = 409


class ConnectionNameTaken(DbPoolError):
    code = "CONNECTION_NAME_TAKEN"
    status = 409


class TableNotFound(DbPoolError):
    code = "TABLE_NOT_FOUND"
    status = 404


class CredentialsUnreadable(DbPoolError):
    code = "CREDENTIALS_UNREADABLE"
    status = 500


class RegistryUnavailable(DbPoolError):
    """The registry's own database cannot be reached (existing pools keep serving)."""

    code = "REGISTRY_UNAVAILABLE"
    status = 503


class InternalError(DbPoolError):
    code = "INTERNAL_ERROR"
    status = 500


class DatabaseError(DbPoolError):
    """Talking to an external database failed."""

    code = "INTERNAL_ERROR"
    status = 500


class PoolExhausted(DatabaseError):
    code = "POOL_EXHAUSTED"
    status = 503


class DbUnavailable(DatabaseError):
    code = "DB_UNAVAILABLE"
    status = 503


class DbAuthFailed(DatabaseError):
    code = "DB_AUTH_FAILED"
    status = 502


class QueryTimeout(DatabaseError):
    code = "QUERY_TIMEOUT"
    status = 504


class QueryError(DatabaseError):
    code = "QUERY_ERROR"
    status = 400


class ReadOnlyViolation(DatabaseError):
    code = "READ_ONLY"
    status = 403
