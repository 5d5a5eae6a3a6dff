"""``DBPOOL_ALLOWED_HOSTS`` at registration: a clear 403 before anything is stored.

The rules and the check live in ``app.pools.allowlist``, which also runs them on every new
connection; this is the API's entry point to them.
"""

from __future__ import annotations

from app.pools.allowlist import ensure_host_allowed

__all__ = ["ensure_host_allowed"]
