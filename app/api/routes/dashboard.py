"""``GET /dashboard``: one static page (HTML, CSS, JavaScript shipped in ``app/api/static``)
that draws the pool monitor. No token here: the page holds no data. Its script asks the API
with the bearer key the operator types in (kept in the tab's session storage), so the data
stays behind the same auth as ``/pool-status``.

The files are read once, at import, from the installed package; a strict Content-Security-
Policy lets the page load nothing but these files and talk to nothing but this service.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter, HTTPException, Response

__all__ = ["router"]

_STATIC = files("app.api") / "static"
_ASSETS = {
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
}
_BODIES = {name: (_STATIC / name).read_bytes() for name in (*_ASSETS, "dashboard.html")}
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


@router.get("/dashboard")
async def dashboard() -> Response:
    return Response(_BODIES["dashboard.html"], media_type="text/html; charset=utf-8",
                    headers=_HEADERS)


@router.get("/dashboard/{asset}")
async def dashboard_asset(asset: str) -> Response:
    media_type = _ASSETS.get(asset)
    if media_type is None:
        raise HTTPException(status_code=404)
    return Response(_BODIES[asset], media_type=media_type, headers=_HEADERS)
