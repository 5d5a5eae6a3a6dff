"""A copy of the project as a fresh clone would have it: the tracked (and not ignored) files."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

__all__ = ["ROOT", "fresh_copy"]

ROOT = Path(__file__).resolve().parents[2]


def fresh_copy(target: Path) -> Path:
    """Copy the checkout's files that git knows (tracked or new, not ignored) into ``target``."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():  # a file deleted but not yet committed is still listed
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target
