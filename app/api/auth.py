"""Bearer-token authorisation: the query key for queries and status, the admin key for all.

With neither key configured, auth is off (``main`` logs a warning at start).
"""

from __future__ import annotations

import enum
import hmac

from pydantic import SecretStr

from app.errors import Forbidden, Unauthorized
from app.settings import Settings

__all__ = ["Access", "authorize"]


class Access(enum.Enum):
    """What a route needs: any valid key (``QUERY``) or the admin key (``ADMIN``)."""

    QUERY = "query"
    ADMIN = "admin"


def _matches(token: str, key: SecretStr | None) -> bool:
    if key is None:
        return False
    return hmac.compare_digest(token.encode(), key.get_secret_value().encode())


def authorize(settings: Settings, token: str | None, needed: Access) -> None:
    """Check a bearer ``token``: ``Unauthorized`` when missing or unknown, ``Forbidden`` when
    the query key is used where the admin key is needed. No-op while auth is off."""
    if not settings.auth_enabled:
        return
    if not token:
        raise Unauthorized("missing bearer token (Authorization: Bearer <key>)")
    # Both comparisons always run, so timing does not tell which key was close.
    is_admin = _matches(token, settings.admin_api_key)
    is_query = _matches(token, settings.api_key)
    if is_admin:
        return
    if not is_query:
        raise Unauthorized("invalid bearer token")
    if needed is Access.ADMIN:
        raise Forbidden("this operation needs the admin key")
