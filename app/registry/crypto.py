"""The secret box: stored passwords encrypted with Fernet, several keys for rotation.

The first key encrypts, every key decrypts (``cryptography``'s ``MultiFernet``).
Keys come from ``DBPOOL_ENCRYPTION_KEYS`` or, for a single development box, from a
key file created on first start with mode 0600.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import uuid
from collections.abc import Sequence
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import SecretStr

from app.errors import CredentialsUnreadable
from app.settings import Settings

__all__ = ["SecretBox", "generate_key", "load_secret_box"]

logger = logging.getLogger(__name__)

_DEFAULT_LABEL = "a stored password"


def generate_key() -> str:
    """A fresh random Fernet key (url-safe base64 text)."""
    return Fernet.generate_key().decode("ascii")


def _fernet(key: str | SecretStr, position: int) -> Fernet:
    raw = key.get_secret_value() if isinstance(key, SecretStr) else key
    try:
        return Fernet(raw.strip().encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        # ``from None``: the original exception may carry the key's text.
        raise ValueError(
            f"encryption key #{position} is not a valid Fernet key "
            "(expected 32 url-safe base64-encoded bytes; make one with `dbpool keys generate`)"
        ) from None


class SecretBox:
    """Encrypts and decrypts stored passwords; ``repr`` shows only how many keys it holds."""

    __slots__ = ("_key_count", "_multi")

    def __init__(self, keys: Sequence[str | SecretStr]) -> None:
        if not keys:
            raise ValueError("at least one encryption key is required")
        self._multi = MultiFernet([_fernet(key, i) for i, key in enumerate(keys, start=1)])
        self._key_count = len(keys)

    def __repr__(self) -> str:
        return f"SecretBox(keys={self._key_count})"

    @property
    def key_count(self) -> int:
        """How many keys this box tries when decrypting."""
        return self._key_count

    def encrypt(self, plaintext: str) -> str:
        """Ciphertext of ``plaintext`` under the first key."""
        return self._multi.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str, *, label: str = _DEFAULT_LABEL) -> str:
        """The plaintext; ``CredentialsUnreadable`` (about ``label``) when no key opens it."""
        try:
            return self._multi.decrypt(token.encode("utf-8")).decode("utf-8")
        except InvalidToken as exc:
            raise self._unreadable(label) from exc

    def rotate(self, token: str, *, label: str = _DEFAULT_LABEL) -> str:
        """``token`` re-encrypted under the first key; raises like ``decrypt``."""
        try:
            return self._multi.rotate(token.encode("utf-8")).decode("ascii")
        except InvalidToken as exc:
            raise self._unreadable(label) from exc

    def _unreadable(self, label: str) -> CredentialsUnreadable:
        return CredentialsUnreadable(
            f"{label} cannot be decrypted with any of the {self._key_count} configured "
            "encryption key(s); add the key it was encrypted with to DBPOOL_ENCRYPTION_KEYS "
            "(DBPOOL_KEY_FILE when that is unset), or set the password again",
            details={"keysTried": self._key_count},
        )


def load_secret_box(settings: Settings) -> SecretBox:
    """The box for ``settings``: ``DBPOOL_ENCRYPTION_KEYS`` if set, else the key file."""
    if settings.encryption_keys:
        return SecretBox(settings.encryption_keys)
    return SecretBox(_read_or_create_key_file(settings.key_file))


def _read_or_create_key_file(path: Path) -> list[str]:
    if not path.exists():
        _create_key_file(path)
    else:
        _warn_if_loose(path)
    keys = [part.strip() for part in path.read_text("ascii").replace(",", "\n").split()]
    if not keys:
        raise ValueError(f"the key file {path} holds no key")
    return keys


def _create_key_file(path: Path) -> None:
    """Write a new key to ``path`` atomically: readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(generate_key() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temp, path)  # fails if a process starting alongside us won the race
        except FileExistsError:
            return
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
    logger.warning(
        "generated a new encryption key in %s; set DBPOOL_ENCRYPTION_KEYS in production "
        "and keep a copy of this key: without it no stored password can be read",
        path,
    )


def _warn_if_loose(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        logger.warning("the key file %s is readable by others (mode %o); chmod 600 it", path, mode)
