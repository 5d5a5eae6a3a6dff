"""The service's one typed configuration, read from ``DBPOOL_*`` environment variables.

There is no module-level instance: ``Settings()`` is built once by a composition root
(``main.create_app`` or ``cli``) and passed down.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["Settings"]

MAX_HISTORY_SAMPLES = 3600  # per pool: bounds the history's memory (~40 bytes a sample)
HostRule = ipaddress.IPv4Network | ipaddress.IPv6Network | str


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Every ``DBPOOL_*`` variable of DESIGN.md, typed and validated once at start."""

    model_config = SettingsConfigDict(env_prefix="DBPOOL_", extra="ignore", frozen=True)

    # Secret: a PostgreSQL registry URL carries its password (``repr`` shows ``**********``).
    registry_url: SecretStr = SecretStr("sqlite+aiosqlite:///./dbpool.sqlite3")
    encryption_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    key_file: Path = Path("./.dbpool.key")
    api_key: SecretStr | None = None
    admin_api_key: SecretStr | None = None
    # Refuse to start without a key (the Docker image sets it).
    require_auth: bool = False
    # With auth off, only loopback clients are answered unless this is set (protected mode).
    allow_unauthenticated_remote: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)

    pool_idle_ttl_seconds: float = Field(default=600, gt=0)
    health_check_interval_seconds: float = Field(default=60, gt=0)
    connection_idle_timeout_seconds: float = Field(default=30, gt=0)
    pool_recycle_seconds: float = Field(default=1800, gt=0)
    max_waiting_per_pool: int = Field(default=100, ge=0)
    max_rows: int = Field(default=10000, ge=1)
    # Cap on one response's encoded rows, and on the rows of all of a /transaction's results
    # (0: ``max_rows * 10``). Past either: RESULT_TOO_LARGE (413).
    max_response_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    max_transaction_rows: int = Field(default=0, ge=0)
    # The HTTP edge: request body cap and how long a body may take to arrive; connections
    # served at once (beyond: 503) and how long an idle keep-alive connection is kept.
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    body_timeout_seconds: float = Field(default=30, gt=0)
    limit_concurrency: int = Field(default=1000, ge=1)
    keep_alive_seconds: int = Field(default=5, ge=1)
    allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    shutdown_grace_seconds: float = Field(default=5, ge=0)
    probe_max_interval_seconds: float = Field(default=1.0, gt=0, le=60)
    auth_retry_interval_seconds: float = Field(default=30, gt=0)
    mysql_driver: Literal["aiomysql", "asyncmy"] = "aiomysql"
    # The dashboard's pool history: one sample per interval, kept for the window.
    history_interval_seconds: float = Field(default=5, gt=0, le=300)
    history_window_seconds: float = Field(default=900, gt=0, le=86400)

    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"

    @field_validator("encryption_keys", "allowed_hosts", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return _split_commas(value)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("api_key", "admin_api_key", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _distinct_keys(self) -> Settings:
        if (
            self.api_key is not None
            and self.admin_api_key is not None
            and self.api_key.get_secret_value() == self.admin_api_key.get_secret_value()
        ):
            raise ValueError("DBPOOL_API_KEY and DBPOOL_ADMIN_API_KEY must differ")
        if self.require_auth and not self.auth_enabled:
            raise ValueError(
                "DBPOOL_REQUIRE_AUTH is set but no key is: set DBPOOL_ADMIN_API_KEY (and "
                "DBPOOL_API_KEY for callers), e.g. from `dbpool keys generate`"
            )
        if self.history_window_seconds / self.history_interval_seconds > MAX_HISTORY_SAMPLES:
            raise ValueError(
                f"DBPOOL_HISTORY_WINDOW_SECONDS / DBPOOL_HISTORY_INTERVAL_SECONDS must not pass "
                f"{MAX_HISTORY_SAMPLES} samples per pool: shorten the window or sample less often"
            )
        for key in (self.api_key, self.admin_api_key):
            if key is not None and len(key.get_secret_value()) < 16:
                raise ValueError("API keys must be at least 16 characters long")
        return self

    @property
    def auth_enabled(self) -> bool:
        """True when at least one bearer key is configured."""
        return self.api_key is not None or self.admin_api_key is not None

    @property
    def transaction_row_cap(self) -> int:
        """Rows all of a ``/transaction``'s results may hold together."""
        return self.max_transaction_rows or self.max_rows * 10

    def allowed_host_rules(self) -> list[HostRule]:
        """``DBPOOL_ALLOWED_HOSTS`` parsed: networks for CIDRs/IPs, lowercase names otherwise."""
        rules: list[HostRule] = []
        for entry in self.allowed_hosts:
            try:
                rules.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                rules.append(entry.lower().rstrip("."))
        return rules
