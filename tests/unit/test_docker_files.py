"""Static checks of Dockerfile and docker-compose.yml (there is no Docker engine to build with)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SETTINGS_ENV = {f"DBPOOL_{name.upper()}" for name in Settings.model_fields}
ENV_NAME = re.compile(r"\bDBPOOL_[A-Z0-9_]+\b")


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs: comments dropped, ``\\`` continuations joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or (line.startswith("#") and not pending):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        pending = ""
    assert not pending, "Dockerfile ends inside a continued line"
    return instructions


def exec_form(args: str) -> list[str]:
    """The argv of an exec-form (JSON array) CMD/ENTRYPOINT/HEALTHCHECK CMD, or shell words."""
    return list(json.loads(args)) if args.startswith("[") else shlex.split(args)


def env_pairs(args: str) -> dict[str, str]:
    return dict(word.split("=", 1) for word in shlex.split(args))


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return parse_dockerfile((ROOT / "Dockerfile").read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def _all(instructions: list[tuple[str, str]], keyword: str) -> list[str]:
    return [args for kw, args in instructions if kw == keyword]


def _final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (kw, _) in enumerate(instructions) if kw == "FROM"]
    assert starts, "no FROM"
    return instructions[starts[-1] :]


def test_parser_joins_continuations_and_drops_comments() -> None:
    parsed = parse_dockerfile("# c\nFROM x\nRUN a \\\n  # inner\n && b\nCMD [\"y\"]\n")
    assert parsed == [("FROM", "x"), ("RUN", "a  && b"), ("CMD", '["y"]')]


def test_runtime_image_is_slim_python_311(dockerfile: list[tuple[str, str]]) -> None:
    base = _final_stage(dockerfile)[0][1].split()[0]
    assert base == "python:3.11-slim"


def test_runs_as_non_root_uid_10001(dockerfile: list[tuple[str, str]]) -> None:
    users = _all(_final_stage(dockerfile), "USER")
    assert users, "no USER in the final stage"
    assert users[-1].split(":")[0] in {"10001", "dbpool"}
    assert any("--uid 10001" in run for run in _all(dockerfile, "RUN"))


def test_copies_package_and_migrations_and_installs_with_pip(
    dockerfile: list[tuple[str, str]],
) -> None:
    stage = _final_stage(dockerfile)
    copied = " ".join(_all(stage, "COPY"))
    for item in ("pyproject.toml", "README.md", "app", "alembic"):
        assert re.search(rf"(^|\s){re.escape(item)}(\s|$)", copied), item
    runs = " ".join(_all(stage, "RUN"))
    assert "pip install" in runs and "--no-cache-dir" in runs


def test_alembic_lands_in_the_workdir(dockerfile: list[tuple[str, str]]) -> None:
    """``dbpool migrate`` looks for alembic/ next to app/ and in ``Path.cwd()``."""
    stage = _final_stage(dockerfile)
    workdirs = [i for i, (kw, _) in enumerate(stage) if kw == "WORKDIR"]
    assert workdirs, "no WORKDIR"
    workdir = stage[workdirs[-1]][1].rstrip("/")
    for source in ("app", "alembic"):
        copy_args = [
            args.split() for kw, args in stage[workdirs[-1] :]
            if kw == "COPY" and source in args.split()[:-1]
        ]
        assert len(copy_args) == 1, f"{source}/ is not copied after the last WORKDIR"
        words = [w for w in copy_args[0] if not w.startswith("--")]
        # COPY of several sources copies directory *contents* into one place: one dir per COPY.
        assert words[:-1] == [source], f"copy {source}/ on its own: COPY {source} ./{source}"
        assert words[-1].rstrip("/") in {f"./{source}", source, f"{workdir}/{source}"}


def test_listens_on_all_interfaces_port_8000(dockerfile: list[tuple[str, str]]) -> None:
    stage = _final_stage(dockerfile)
    env: dict[str, str] = {}
    for args in _all(stage, "ENV"):
        env.update(env_pairs(args))
    assert env["DBPOOL_HOST"] == "0.0.0.0"
    assert "8000" in _all(stage, "EXPOSE")[-1].split()


def test_healthcheck_probes_healthz_without_curl(dockerfile: list[tuple[str, str]]) -> None:
    checks = _all(_final_stage(dockerfile), "HEALTHCHECK")
    assert len(checks) == 1
    _, _, command = checks[0].partition("CMD ")
    argv = exec_form(command.strip())
    assert argv[0].startswith("python")
    assert "urllib" in argv[-1] and "/healthz" in argv[-1]
    assert "curl" not in checks[0]
    compile(argv[-1], "<healthcheck>", "exec")  # the probe is valid Python


def test_default_command_is_dbpool_serve(dockerfile: list[tuple[str, str]]) -> None:
    assert exec_form(_all(_final_stage(dockerfile), "CMD")[-1]) == ["dbpool", "serve"]


def test_dockerignore_keeps_secrets_and_venv_out() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert "**" in lines, "the context is an allow-list"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "app", "alembic"}


def _service_env_names(service: dict[str, Any]) -> set[str]:
    env = service.get("environment") or {}
    keys = env.keys() if isinstance(env, dict) else [item.split("=", 1)[0] for item in env]
    return {key for key in keys if key.startswith("DBPOOL_")}


def test_every_dbpool_variable_is_a_setting(
    dockerfile: list[tuple[str, str]], compose: dict[str, Any]
) -> None:
    used = set(ENV_NAME.findall((ROOT / "Dockerfile").read_text()))
    for service in compose["services"].values():
        used |= _service_env_names(service)
    assert used, "no DBPOOL_* variable found at all"
    assert used <= SETTINGS_ENV, f"not fields of Settings: {sorted(used - SETTINGS_ENV)}"


def test_compose_has_the_expected_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"registry", "migrate", "dbpool"} <= services.keys()
    assert {"sample-postgres", "sample-mysql", "sample-mariadb"} <= services.keys()
    assert services["registry"]["image"].startswith("postgres:16")
    assert services["sample-mysql"]["image"].startswith("mysql:8")
    assert services["sample-mariadb"]["image"].startswith("mariadb:10.11")
    assert "pg_isready" in str(services["registry"]["healthcheck"]["test"])


def test_service_healthy_dependencies_have_healthchecks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions"
        for dep, cond in depends.items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if cond.get("condition") == "service_healthy":
                assert "healthcheck" in services[dep], f"{dep} has no healthcheck"
    for name in ("sample-postgres", "sample-mysql", "sample-mariadb", "dbpool"):
        assert services[name]["healthcheck"]["test"], name


def test_migrate_runs_once_before_the_service(compose: dict[str, Any]) -> None:
    services = compose["services"]
    migrate = services["migrate"]
    assert list(migrate["command"]) == ["dbpool", "migrate"]
    assert migrate["depends_on"]["registry"]["condition"] == "service_healthy"
    assert migrate.get("restart", "no") == "no"
    depends = services["dbpool"]["depends_on"]
    assert depends["registry"]["condition"] == "service_healthy"
    assert depends["migrate"]["condition"] == "service_completed_successfully"


def test_dbpool_service_env_ports_and_required_secrets(compose: dict[str, Any]) -> None:
    service = compose["services"]["dbpool"]
    env = service["environment"]
    assert env["DBPOOL_REGISTRY_URL"].startswith("postgresql+asyncpg://")
    assert "@registry:5432/" in env["DBPOOL_REGISTRY_URL"]
    for secret in ("DBPOOL_ENCRYPTION_KEYS", "DBPOOL_API_KEY", "DBPOOL_ADMIN_API_KEY"):
        assert re.fullmatch(rf"\$\{{{secret}:\?[^}}]+\}}", env[secret]), secret
    assert env.get("DBPOOL_HOST", "0.0.0.0") == "0.0.0.0"
    assert any(str(port).endswith("8000") for port in service["ports"])
    assert "/healthz" in str(service["healthcheck"]["test"])
    assert compose["services"]["migrate"]["environment"]["DBPOOL_REGISTRY_URL"] == (
        env["DBPOOL_REGISTRY_URL"]
    )


def test_no_literal_secrets_in_compose(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"PASSWORD|_KEYS?$", key) and "RANDOM" not in key:
                assert str(value).startswith("${"), f"{name}: literal secret in {key}"
