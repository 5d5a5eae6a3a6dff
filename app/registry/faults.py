"""The one place a registry *database* failure becomes the service's error.

An unreachable registry (refused, reset, timed out, connection lost mid-statement) is
``RegistryUnavailable`` (503 + Retry-After): logged as one warning line, no traceback. Pools
that already exist keep serving from the configuration they were built with; only new pools
and registry reads/writes wait for the registry.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from app.errors import RegistryUnavailable

__all__ = ["RETRY_AFTER_SECONDS", "registry_faults", "translate_registry_faults"]

RETRY_AFTER_SECONDS = 5.0
P = ParamSpec("P")
T = TypeVar("T")


def _unreachable(exc: BaseException) -> bool:
    if isinstance(exc, OperationalError | InterfaceError | OSError | TimeoutError):
        return True  # refused, reset, timed out, closed under us
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


@contextmanager
def registry_faults() -> Iterator[None]:
    """Turn "the registry database cannot be reached" into ``RegistryUnavailable``."""
    try:
        yield
    except Exception as exc:
        if not _unreachable(exc):
            raise
        # The class name only: a driver's message may quote the registry's URL. Not logged
        # here: whoever handles the error logs one line (the route, the housekeeper).
        raise RegistryUnavailable(
            "The registry database cannot be reached; existing pools keep serving. "
            f"Retry in a few seconds; if it persists, check DBPOOL_REGISTRY_URL's database "
            f"({type(exc).__name__})",
            retry_after=RETRY_AFTER_SECONDS,
        ) from exc


def translate_registry_faults(
    method: Callable[P, Awaitable[T]],
) -> Callable[P, Awaitable[T]]:
    """Decorate a repository coroutine with ``registry_faults()``."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        with registry_faults():
            return await method(*args, **kwargs)

    return wrapper
