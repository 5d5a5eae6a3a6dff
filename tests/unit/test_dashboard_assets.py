"""The dashboard's files: shipped in the wheel (package data) and self-contained (nothing
loaded from another origin: it must work where the internet is not reachable)."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "app" / "api" / "static"


def test_every_static_file_is_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["app"]
    files = sorted(p.relative_to(ROOT / "app").as_posix() for p in STATIC.iterdir())
    assert files == ["api/static/dashboard.css", "api/static/dashboard.html",
                     "api/static/dashboard.js"]
    for name in files:
        assert any(fnmatch.fnmatch(name, pattern) for pattern in patterns), name


def test_nothing_comes_from_another_origin() -> None:
    for path in STATIC.iterdir():
        text = path.read_text()
        # The only absolute URL allowed is the SVG namespace, which is a name, not a fetch.
        urls = set(re.findall(r"[a-z]+://[^\s\"'`)]+", text)) - {"http://www.w3.org/2000/svg"}
        assert not urls, (path.name, urls)
        assert "@import" not in text and "fonts.googleapis" not in text


def test_the_key_never_goes_into_a_url() -> None:
    script = (STATIC / "dashboard.js").read_text()
    assert "sessionStorage" in script and "localStorage" not in script
    assert "Authorization" in script
    assert not re.search(r"[?&](key|token|api_?key)=", script, re.I)
