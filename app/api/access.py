"""Which key each route needs, read once from the routers' own ``BearerAuth`` dependencies.

The middleware decides auth from this table and the headers alone, before any body is read;
the dependency on the route stays the single place a route declares what it needs (and
what ``/docs`` shows).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from fastapi import APIRouter
from fastapi.routing import APIRoute

from app.api.auth import Access
from app.api.deps import BearerAuth

__all__ = ["AccessTable"]


@dataclass(frozen=True, slots=True)
class AccessTable:
    """``(method, path) -> Access`` for every route that needs a key; None for public ones."""

    by_method: dict[str, tuple[tuple[re.Pattern[str], Access], ...]]

    @classmethod
    def of(cls, routers: Iterable[APIRouter]) -> AccessTable:
        table: dict[str, list[tuple[re.Pattern[str], Access]]] = {}
        for router in routers:
            for route in router.routes:
                if not isinstance(route, APIRoute):
                    continue
                needed = _needed(route)
                if needed is None:
                    continue
                for method in route.methods or ():
                    table.setdefault(method, []).append((route.path_regex, needed))
        return cls({method: tuple(rules) for method, rules in table.items()})

    def needed(self, method: str, path: str) -> Access | None:
        """The key ``method path`` needs; None for a public route (or no route: 404/405)."""
        for pattern, needed in self.by_method.get(method, ()):
            if pattern.match(path):
                return needed
        return None


def _needed(route: APIRoute) -> Access | None:
    for dependency in route.dependant.dependencies:
        if isinstance(dependency.call, BearerAuth):
            return dependency.call.needed
    return None
