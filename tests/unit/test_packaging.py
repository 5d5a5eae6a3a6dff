"""pyproject.toml lists exactly the packages the wheel must carry, migrations included.

They are listed, not found, because the top-level ``alembic/`` is mapped to ``app._alembic`` at
build time (tests/e2e/test_wheel.py builds, installs and runs the wheel itself).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _packages(directory: Path, name: str, marker: str) -> set[str]:
    """``name`` plus a dotted name for every folder under ``directory`` holding ``marker``."""
    return {
        ".".join((name, *found.parent.relative_to(directory).parts))
        for found in directory.rglob(marker)
        if "__pycache__" not in found.parts
    }


def test_packages_are_app_and_the_mapped_migrations() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    expected = _packages(ROOT / "app", "app", "__init__.py") | _packages(
        ROOT / "alembic", "app._alembic", "*.py"
    )
    listed = set(config["packages"])
    assert listed == expected, (
        f"[tool.setuptools] packages in pyproject.toml: add {sorted(expected - listed)}, "
        f"remove {sorted(listed - expected)}"
    )
    assert config["package-dir"] == {"app._alembic": "alembic"}
    assert config["package-data"]["app._alembic"] == ["script.py.mako"]
    assert (ROOT / "alembic" / "script.py.mako").is_file()
