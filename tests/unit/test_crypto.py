"""SecretBox, key generation and key loading (pure logic and the local file system)."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr

from app.errors import CredentialsUnreadable
from app.registry.crypto import SecretBox, generate_key, load_secret_box
from app.settings import Settings

PLAINTEXT = "s3cret-Pässword!"


def test_roundtrip_and_ciphertext_hides_plaintext() -> None:
    box = SecretBox([generate_key()])
    token = box.encrypt(PLAINTEXT)
    assert PLAINTEXT not in token
    assert box.encrypt(PLAINTEXT) != token  # a fresh IV every time
    assert box.decrypt(token) == PLAINTEXT


def test_first_key_encrypts_all_keys_decrypt() -> None:
    k1, k2 = generate_key(), generate_key()
    old_token = SecretBox([k1]).encrypt(PLAINTEXT)
    both = SecretBox([k2, k1])
    assert both.decrypt(old_token) == PLAINTEXT
    new_token = both.encrypt(PLAINTEXT)
    assert SecretBox([k2]).decrypt(new_token) == PLAINTEXT
    with pytest.raises(CredentialsUnreadable):
        SecretBox([k1]).decrypt(new_token)


def test_rotate_moves_a_token_to_the_first_key() -> None:
    k1, k2 = generate_key(), generate_key()
    token = SecretBox([k1]).encrypt(PLAINTEXT)
    rotated = SecretBox([k2, k1]).rotate(token)
    assert SecretBox([k2]).decrypt(rotated) == PLAINTEXT


def test_rotate_of_an_unreadable_token_raises() -> None:
    token = SecretBox([generate_key()]).encrypt(PLAINTEXT)
    with pytest.raises(CredentialsUnreadable):
        SecretBox([generate_key()]).rotate(token)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: t[:-4] + ("AAAA" if not t.endswith("AAAA") else "BBBB"),
        lambda t: t[:20],
        lambda t: "not a token at all",
        lambda t: "",
    ],
)
def test_tampered_ciphertext_is_credentials_unreadable(tamper: object) -> None:
    box = SecretBox([generate_key(), generate_key()])
    token = box.encrypt(PLAINTEXT)
    with pytest.raises(CredentialsUnreadable) as info:
        box.decrypt(tamper(token))  # type: ignore[operator]
    error = info.value
    assert error.code == "CREDENTIALS_UNREADABLE"
    assert error.status == 500
    assert "2 configured encryption key(s)" in error.message
    assert "DBPOOL_ENCRYPTION_KEYS" in error.message
    assert error.details == {"keysTried": 2}


def test_unreadable_message_names_the_label() -> None:
    with pytest.raises(CredentialsUnreadable, match="the password of thing 7"):
        SecretBox([generate_key()]).decrypt("junk", label="the password of thing 7")


@pytest.mark.parametrize(
    "bad_key",
    ["short-but-secret-ish", "x" * 44, "zzzz" * 11, "Ünïcode-secret-key-value-that-is-44-chars!!"],
)
def test_malformed_key_names_its_position_not_its_value(bad_key: str) -> None:
    with pytest.raises(ValueError) as info:
        SecretBox([generate_key(), bad_key])
    text = str(info.value)
    assert "#2" in text
    assert "Fernet" in text
    assert bad_key not in text
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


def test_no_keys_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        SecretBox([])


def test_repr_shows_only_the_key_count() -> None:
    keys = [generate_key(), generate_key()]
    box = SecretBox(keys)
    assert repr(box) == "SecretBox(keys=2)"
    assert str(box) == "SecretBox(keys=2)"
    assert box.key_count == 2
    assert not any(key in repr(box) for key in keys)
    with pytest.raises(AttributeError):
        box.__dict__  # noqa: B018  (slots only: nothing to dump by accident)


def test_generate_key_is_a_valid_distinct_fernet_key() -> None:
    key = generate_key()
    Fernet(key.encode())
    assert key != generate_key()


def test_accepts_secret_str_keys() -> None:
    key = generate_key()
    box = SecretBox([SecretStr(key)])
    assert SecretBox([key]).decrypt(box.encrypt(PLAINTEXT)) == PLAINTEXT


def test_load_prefers_environment_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    k1, k2 = generate_key(), generate_key()
    monkeypatch.setenv("DBPOOL_ENCRYPTION_KEYS", f"{k2}, {k1}")
    key_file = tmp_path / "unused.key"
    box = load_secret_box(Settings(key_file=key_file))
    assert box.key_count == 2
    assert box.decrypt(SecretBox([k1]).encrypt(PLAINTEXT)) == PLAINTEXT
    assert not key_file.exists()


def test_key_file_created_0600_with_a_warning_then_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("DBPOOL_ENCRYPTION_KEYS", raising=False)
    key_file = tmp_path / "sub" / ".dbpool.key"
    settings = Settings(key_file=key_file)

    with caplog.at_level(logging.WARNING, logger="app.registry.crypto"):
        first = load_secret_box(settings)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_text().strip()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(key_file) in warnings[0].getMessage()
    assert "DBPOOL_ENCRYPTION_KEYS" in warnings[0].getMessage()
    assert key not in caplog.text
    assert list(tmp_path.joinpath("sub").iterdir()) == [key_file]  # no temp file left

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="app.registry.crypto"):
        second = load_secret_box(settings)
    assert caplog.records == []
    assert key_file.read_text().strip() == key
    assert second.decrypt(first.encrypt(PLAINTEXT)) == PLAINTEXT


def test_loose_key_file_permissions_are_warned_about(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("DBPOOL_ENCRYPTION_KEYS", raising=False)
    key_file = tmp_path / "loose.key"
    key = generate_key()
    key_file.write_text(key + "\n")
    key_file.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="app.registry.crypto"):
        load_secret_box(Settings(key_file=key_file))
    assert "readable by others" in caplog.text
    assert key not in caplog.text


def test_empty_key_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DBPOOL_ENCRYPTION_KEYS", raising=False)
    key_file = tmp_path / "empty.key"
    key_file.touch(mode=0o600)
    with pytest.raises(ValueError, match="holds no key"):
        load_secret_box(Settings(key_file=key_file))
