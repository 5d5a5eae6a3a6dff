"""Settings: parsing of DBPOOL_* variables, refusal of bad values, value-free summaries."""

from __future__ import annotations

import ipaddress

import pytest

from app.main import SettingsError, create_app, load_settings
from app.settings import Settings

SECRET = "super-secret-admin-key-123456"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("DBPOOL_"):
            monkeypatch.delenv(name)


def test_defaults_match_the_design() -> None:
    s = Settings()
    assert s.registry_url.get_secret_value() == "sqlite+aiosqlite:///./dbpool.sqlite3"
    assert (s.require_auth, s.allow_unauthenticated_remote) == (False, False)
    assert s.max_response_bytes == 64 * 1024 * 1024 and s.transaction_row_cap == 100000
    assert (s.host, s.port, s.max_rows, s.max_waiting_per_pool) == ("127.0.0.1", 8000, 10000, 100)
    assert (s.pool_idle_ttl_seconds, s.health_check_interval_seconds) == (600, 60)
    assert not s.auth_enabled and s.allowed_host_rules() == []


def test_comma_separated_lists_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBPOOL_ENCRYPTION_KEYS", " k1 , k2,,")
    monkeypatch.setenv("DBPOOL_ALLOWED_HOSTS", "10.0.0.0/8, DB.Example.com., 127.0.0.1, ::1")
    s = load_settings()
    assert [k.get_secret_value() for k in s.encryption_keys] == ["k1", "k2"]
    assert s.allowed_host_rules() == [
        ipaddress.ip_network("10.0.0.0/8"),
        "db.example.com",
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("::1/128"),
    ]


def test_log_level_is_case_insensitive_and_empty_key_is_unset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DBPOOL_LOG_LEVEL", "debug")
    monkeypatch.setenv("DBPOOL_API_KEY", "")
    s = load_settings()
    assert s.log_level == "DEBUG" and s.api_key is None


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DBPOOL_PORT", "0"),
        ("DBPOOL_PORT", "eighty"),
        ("DBPOOL_LOG_FORMAT", "xml"),
        ("DBPOOL_MAX_ROWS", "0"),
        ("DBPOOL_POOL_IDLE_TTL_SECONDS", "-5"),
    ],
)
def test_bad_values_are_summarised_by_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert variable in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


@pytest.mark.parametrize(
    ("api_key", "admin_key"),
    [("short", None), (SECRET, SECRET), (None, "tiny")],
)
def test_bad_api_keys_are_refused_without_echoing_them(
    monkeypatch: pytest.MonkeyPatch, api_key: str | None, admin_key: str | None
) -> None:
    if api_key is not None:
        monkeypatch.setenv("DBPOOL_API_KEY", api_key)
    if admin_key is not None:
        monkeypatch.setenv("DBPOOL_ADMIN_API_KEY", admin_key)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "invalid settings" in message
    for secret in (api_key, admin_key):
        if secret is not None:
            assert secret not in message


def test_create_app_exits_with_the_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBPOOL_ADMIN_API_KEY", "tiny")
    with pytest.raises(SystemExit) as caught:
        create_app()
    assert "invalid settings" in str(caught.value.code) and "tiny" not in str(caught.value.code)


def test_settings_repr_hides_keys() -> None:
    s = Settings(api_key=SECRET, encryption_keys="a-fernet-key-text")
    assert SECRET not in repr(s) and "a-fernet-key-text" not in repr(s)


def test_registry_url_password_stays_out_of_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBPOOL_REGISTRY_URL", "postgresql+asyncpg://dbpool:pw-in-url@db/registry")
    s = load_settings()
    assert "pw-in-url" not in repr(s) and "pw-in-url" not in str(s)
    assert s.registry_url.get_secret_value().endswith("@db/registry")


def test_require_auth_without_a_key_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBPOOL_REQUIRE_AUTH", "true")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "DBPOOL_ADMIN_API_KEY" in str(caught.value)
    monkeypatch.setenv("DBPOOL_ADMIN_API_KEY", SECRET)
    assert load_settings().auth_enabled


def test_transaction_row_cap_can_be_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBPOOL_MAX_ROWS", "50")
    assert load_settings().transaction_row_cap == 500
    monkeypatch.setenv("DBPOOL_MAX_TRANSACTION_ROWS", "70")
    assert load_settings().transaction_row_cap == 70
