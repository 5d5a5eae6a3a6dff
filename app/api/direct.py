"""``DirectRoute``: a route whose well-formed requests skip FastAPI's generic request handling.

FastAPI reads, decodes and validates every request in Python through a generic dependency
solver; on the query path that cost more than the pool's own work. A ``DirectRoute`` serves a
request itself when it can prove FastAPI would accept it: a JSON body
(``Content-Type: application/json``) that its body model validates in one pass in Rust
(``model_validate_json``), path parameters that their own FastAPI fields validate, and
dependencies that are ``BearerAuth`` declarations (the middleware has checked the key
already). Anything else — another content type, a body or a path parameter that fails,
a route with query, header or cookie parameters — goes to FastAPI's own handler, on the
same ``Request`` (Starlette keeps the body it read), so every error, the 422 envelope
included, is exactly FastAPI's. The route, its dependant and so ``/docs`` are FastAPI's.

Opt-in per endpoint (``@direct``), for endpoints that always return a ``Response``: there is
nothing for FastAPI to serialize. A router gets ``route_class=DirectRoute``; its other
routes stay plain ``APIRoute``s.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError

from app.api.deps import BearerAuth

__all__ = ["DirectRoute", "direct"]

_JSON = b"application/json"
_MARK = "__dbpool_direct__"

Handler = Callable[[Request], Coroutine[Any, Any, Response]]
E = TypeVar("E", bound=Callable[..., Awaitable[Any]])


def direct(endpoint: E) -> E:
    """Mark ``endpoint`` (which always returns a ``Response``) to be served by
    ``DirectRoute`` without FastAPI's generic handling when the request allows it."""
    setattr(endpoint, _MARK, True)
    return endpoint


@dataclass(frozen=True, slots=True)
class _Plan:
    """How to fill the endpoint's arguments from a request, when FastAPI would accept it."""

    endpoint: Callable[..., Awaitable[Any]]
    path: tuple[tuple[str, Any], ...]  # (argument, FastAPI's ModelField)
    body: tuple[str, type[BaseModel]] | None
    auth: tuple[tuple[str, BearerAuth], ...]
    request: str | None

    async def arguments(self, request: Request) -> dict[str, Any] | None:
        """The endpoint's arguments, or None when FastAPI's handler must decide."""
        if request.app.dependency_overrides:  # FastAPI's solver applies them
            return None
        values: dict[str, Any] = {}
        raw = request.path_params
        for name, field in self.path:
            value, errors = field.validate(raw.get(field.alias), values, loc=("path",))
            if errors:
                return None
            values[name] = value
        if self.body is not None:
            if not _is_json(request):
                return None
            name, model = self.body
            try:
                body = await request.body()
            except Exception:  # the client went away mid-body ...: FastAPI answers as it would
                return None
            try:
                values[name] = model.model_validate_json(body)
            except ValidationError:
                return None
        for name, auth in self.auth:
            values[name] = await auth(request)
        if self.request is not None:
            values[self.request] = request
        return values


def _is_json(request: Request) -> bool:
    for name, value in request.scope["headers"]:
        if name == b"content-type":
            return bool(value.lower() == _JSON)
    return False


def _plan(route: APIRoute) -> _Plan | None:
    """The plan for ``route``, or None when it has anything the plan does not handle."""
    dependant = route.dependant
    if not getattr(route.endpoint, _MARK, False):
        return None
    if (
        dependant.query_params or dependant.header_params or dependant.cookie_params
        or dependant.response_param_name or dependant.background_tasks_param_name
        or dependant.security_scopes_param_name or dependant.websocket_param_name
        or dependant.http_connection_param_name or len(dependant.body_params) > 1
        or dependant.call is None
    ):
        return None
    auth = []
    for sub in dependant.dependencies:
        if not isinstance(sub.call, BearerAuth) or not _only_request(sub) or sub.name is None:
            return None
        auth.append((sub.name, sub.call))
    body = None
    if dependant.body_params:
        field = dependant.body_params[0]
        model = field.field_info.annotation
        embedded = getattr(field.field_info, "embed", False)  # Body(embed=True): {"body": ...}
        if embedded or not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        body = (field.name, model)
    return _Plan(
        endpoint=dependant.call,
        path=tuple((f.name, f) for f in dependant.path_params),
        body=body,
        auth=tuple(auth),
        request=dependant.request_param_name,
    )


def _only_request(dependant: Dependant) -> bool:
    return not (
        dependant.path_params or dependant.query_params or dependant.header_params
        or dependant.cookie_params or dependant.body_params or dependant.dependencies
        or dependant.response_param_name or dependant.background_tasks_param_name
        or dependant.security_scopes_param_name
    )


class DirectRoute(APIRoute):
    """An ``APIRoute`` that serves the requests FastAPI would accept for a ``@direct``
    endpoint without FastAPI's generic handling (see the module doc); the rest, and every
    request of an unmarked endpoint, go to FastAPI's handler."""

    def get_route_handler(self) -> Handler:
        standard: Handler = super().get_route_handler()
        plan = _plan(self)
        if plan is None:
            return standard

        async def handler(request: Request) -> Response:
            arguments = await plan.arguments(request)
            if arguments is None:
                return await standard(request)
            response = await plan.endpoint(**arguments)
            if not isinstance(response, Response):
                raise TypeError(f"{self.path}: a DirectRoute endpoint returns a Response")
            return response

        return handler
