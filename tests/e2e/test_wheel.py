"""The wheel as a stranger gets it: built from a fresh copy of the project, installed into a new
virtual environment outside the checkout, and run from an empty directory with nothing of the
checkout on its path: ``dbpool keys generate``, ``dbpool migrate``, ``dbpool serve``."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from alembic.script import ScriptDirectory
from cryptography.fernet import Fernet

from tests.support.project import ROOT, fresh_copy
from tests.support.server import DbpoolServer

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)


def _run(argv: list[str | Path], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(arg) for arg in argv], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=120, check=False,
    )
    assert done.returncode == 0, f"{argv}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _stranger_env(**extra: str) -> dict[str, str]:
    """Our environment without dbpool settings, an active venv or a Python path (the checkout)."""
    drop = ("DBPOOL_", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("wheel")
    project = fresh_copy(base / "project")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", base / "dist", project],
         cwd=base)
    (wheel,) = (base / "dist").glob("dbpool-*.whl")
    # Our pip installs into the new environment (--python): no second copy of pip to set up.
    _run([sys.executable, "-m", "venv", "--without-pip", base / "venv"], cwd=base)
    installed = Installed(wheel=wheel, venv=base / "venv")
    _run([sys.executable, "-m", "pip", "--python", installed.bin("python"), "install", "-q",
          "--no-compile", wheel], cwd=base, env=_stranger_env())
    return installed


@pytest.fixture
def empty_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "empty"
    directory.mkdir()
    return directory


def test_wheel_carries_every_file_of_app_and_the_migrations(installed: Installed) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    package = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "app").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert package <= names, f"not in the wheel: {sorted(package - names)}"
    migrations = {
        "app/_alembic/" + path.relative_to(ROOT / "alembic").as_posix()
        for path in (ROOT / "alembic").rglob("*")
        if path.suffix in {".py", ".mako"}
    }
    assert "app/_alembic/env.py" in migrations
    assert migrations <= names, f"not in the wheel: {sorted(migrations - names)}"
    assert "app/py.typed" in names
    # A top-level alembic/ in the wheel would shadow the Alembic library.
    assert not [name for name in names if name.split("/")[0] in {"alembic", "tests", "bench"}]


def test_installed_keys_and_migrate_need_no_checkout(installed: Installed, empty_dir: Path) -> None:
    env = _stranger_env()
    where = _run(
        [installed.bin("python"), "-c",
         "import app, app.registry.migrations as m; print(app.__file__, m.alembic_directory())"],
        cwd=empty_dir, env=env,
    ).split()
    assert all(Path(path).is_relative_to(installed.venv) for path in where), where
    assert where[1].endswith("app/_alembic")

    key = _run([installed.bin("dbpool"), "keys", "generate"], cwd=empty_dir, env=env).strip()
    Fernet(key.encode())  # raises if malformed

    # The default registry: ./dbpool.sqlite3 in the (empty) working directory.
    _run([installed.bin("dbpool"), "migrate"], cwd=empty_dir,
         env=_stranger_env(DBPOOL_ENCRYPTION_KEYS=key))
    with sqlite3.connect(empty_dir / "dbpool.sqlite3") as registry:
        revisions = {row[0] for row in registry.execute("SELECT version_num FROM alembic_version")}
    assert revisions == set(ScriptDirectory(str(ROOT / "alembic")).get_heads())


def test_installed_serve_is_ready_from_an_empty_directory(
    installed: Installed, empty_dir: Path
) -> None:
    server = DbpoolServer(
        empty_dir, command=[installed.bin("dbpool")], env={"PYTHONPATH": ""}
    ).start()
    try:
        ready = httpx.get(f"{server.base_url}/readyz", timeout=5)
        assert ready.status_code == 200, ready.text
    finally:
        server.stop()
    assert server.stopped_cleanly(), server.log()[-3000:]
