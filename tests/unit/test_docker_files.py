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


def _stages(instructions: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """The build stages, each from its ``FROM`` to the next."""
    starts = [i for i, (kw, _) in enumerate(instructions) if kw == "FROM"]
    assert starts and starts[0] == 0, "the Dockerfile must start with FROM"
    ends = [*starts[1:], len(instructions)]
    return [instructions[a:b] for a, b in zip(starts, ends, strict=True)]


def _final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return _stages(instructions)[-1]


def _stage_name(stage: list[tuple[str, str]]) -> str | None:
    words = stage[0][1].split()
    return words[2] if len(words) == 3 and words[1].upper() == "AS" else None


def _options(args: str) -> tuple[dict[str, str], str]:
    """A RUN's leading ``--mount=k=v,k=v`` options, and the command after them."""
    options: dict[str, str] = {}
    words = args.split()
    while words and words[0].startswith("--mount="):
        options.update(pair.split("=", 1) for pair in words.pop(0)[len("--mount=") :].split(","))
    return options, " ".join(words)


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
    assert any("--uid 10001" in run for run in _all(_final_stage(dockerfile), "RUN"))


def test_a_named_build_stage_builds_the_wheels_from_the_sources(
    dockerfile: list[tuple[str, str]],
) -> None:
    stages = _stages(dockerfile)
    assert len(stages) == 2, "a build stage and the runtime stage"
    build = stages[0]
    assert _stage_name(build) == "build"
    assert build[0][1].split()[0].startswith("python:3.11")
    copied = [args.split() for args in _all(build, "COPY")]
    sources = {word for words in copied for word in words[:-1] if not word.startswith("--")}
    assert sources == {"pyproject.toml", "README.md", "app", "alembic"}
    wheel_runs = [run for run in _all(build, "RUN") if "pip wheel" in run]
    assert len(wheel_runs) == 1
    assert re.search(r"--wheel-dir /wheels \.$", wheel_runs[0]), wheel_runs[0]


def test_the_runtime_stage_installs_only_the_wheels(dockerfile: list[tuple[str, str]]) -> None:
    stage = _final_stage(dockerfile)
    assert not _all(stage, "COPY") and not _all(stage, "ADD"), "no sources in the runtime image"
    installs = [_options(run) for run in _all(stage, "RUN") if "pip install" in run]
    assert len(installs) == 1
    mount, command = installs[0]
    assert mount == {"type": "bind", "from": "build", "source": "/wheels", "target": "/wheels"}
    assert command == "pip install --no-cache-dir --no-index --find-links /wheels dbpool"


def test_no_editable_install_and_no_build_tools_in_the_runtime(
    dockerfile: list[tuple[str, str]],
) -> None:
    text = " ".join(args for _, args in dockerfile)
    assert not re.search(r"pip install[^&;]*(\s-e\s|--editable)", text), "editable install"
    runtime = " ".join(_all(_final_stage(dockerfile), "RUN"))
    assert "apt-get" not in runtime, "the runtime stage installs no system packages"
    for tool in ("gcc", "g++", "build-essential", "make", "-dev", "setuptools", "pip wheel"):
        assert tool not in runtime, tool


def test_working_directory_belongs_to_the_service_user(
    dockerfile: list[tuple[str, str]],
) -> None:
    stage = _final_stage(dockerfile)
    workdir = _all(stage, "WORKDIR")[-1]
    assert f"chown dbpool:dbpool {workdir}" in " ".join(_all(stage, "RUN"))


def test_listens_on_all_interfaces_port_8000_with_keys_required(
    dockerfile: list[tuple[str, str]],
) -> None:
    stage = _final_stage(dockerfile)
    env: dict[str, str] = {}
    for args in _all(stage, "ENV"):
        env.update(env_pairs(args))
    assert env["DBPOOL_HOST"] == "0.0.0.0"
    assert env["DBPOOL_REQUIRE_AUTH"] == "true", "all interfaces only with a key required"
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
    # It serves nothing: no bearer key is handed to it, so it must not require one.
    assert migrate["environment"]["DBPOOL_REQUIRE_AUTH"] == "false"
    assert not {"DBPOOL_API_KEY", "DBPOOL_ADMIN_API_KEY"} & migrate["environment"].keys()
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
    assert env["DBPOOL_REQUIRE_AUTH"] == "true"
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
