"""ConnectionRepository CRUD on a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError

from app.domain import ConfigResolver, DbType
from app.errors import (
    ConnectionInactive,
    ConnectionNameTaken,
    ConnectionNotFound,
    ValidationFailed,
)
from app.registry import (
    ConnectionRepository,
    ExternalDbConnection,
    NewConnection,
    RegistryResolver,
    SecretBox,
    create_registry_engine,
    create_sessionmaker,
    downgrade,
    generate_key,
    upgrade_to_head,
)
from tests.support.registry import KINDS, throwaway_registry

KEY = generate_key()


@pytest.fixture(scope="module", params=KINDS)
def registry_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A migrated registry for this module, downgraded and dropped at the end."""
    with throwaway_registry(request.param, tmp_path_factory.mktemp("registry")) as url:
        asyncio.run(upgrade_to_head(url))
        yield url
        asyncio.run(downgrade(url))


@pytest.fixture
async def repo(registry_url: str) -> AsyncIterator[ConnectionRepository]:
    engine = create_registry_engine(registry_url)
    sessions = create_sessionmaker(engine)
    async with sessions.begin() as session:  # the database is this module's alone
        await session.execute(delete(ExternalDbConnection))
    yield ConnectionRepository(sessions, SecretBox([KEY]))
    await engine.dispose()


def new(**overrides: Any) -> NewConnection:
    values: dict[str, Any] = {
        "name": f"conn-{uuid.uuid4().hex[:10]}",
        "db_type": DbType.POSTGRESQL,
        "host": "127.0.0.1",
        "port": 5432,
        "database": "dbpool_test",
        "username": "dbpool_test",
        "password": SecretStr("pw-" + uuid.uuid4().hex),
    }
    return NewConnection(**(values | overrides))


async def test_create_then_get(repo: ConnectionRepository) -> None:
    spec = new(options={"sslmode": "disable"}, description="crm", max_connections=7)
    created = await repo.create(spec)
    assert created.id > 0
    assert created.name == spec.name
    assert created.db_type is DbType.POSTGRESQL
    assert created.options == {"sslmode": "disable"}
    assert created.max_connections == 7
    assert created.min_connections == 0
    assert created.connection_timeout == 30.0
    assert created.query_timeout == 60.0
    assert created.is_active is True
    assert created.read_only is False
    assert created.config_version == 1
    assert created.has_password is True
    assert created.created_at.tzinfo is UTC
    assert created.updated_at == created.created_at
    fetched = await repo.get(created.id)
    assert fetched == created


async def test_duplicate_name_is_name_taken(repo: ConnectionRepository) -> None:
    first = await repo.create(new())
    with pytest.raises(ConnectionNameTaken) as info:
        await repo.create(new(name=first.name))
    assert info.value.status == 409
    assert info.value.details == {"field": "name"}
    other = await repo.create(new())
    with pytest.raises(ConnectionNameTaken):
        await repo.update(other.id, {"name": first.name})
    total = (await repo.list(100, 0))[1]
    assert total == 2


@pytest.mark.parametrize("method", ["get", "delete", "load_config"])
async def test_unknown_id_is_not_found(repo: ConnectionRepository, method: str) -> None:
    with pytest.raises(ConnectionNotFound) as info:
        await getattr(repo, method)(987654321)
    assert info.value.details == {"connectionId": 987654321}


async def test_update_of_unknown_id_is_not_found(repo: ConnectionRepository) -> None:
    with pytest.raises(ConnectionNotFound):
        await repo.update(987654321, {"description": "x"})


async def test_list_pages_in_id_order(repo: ConnectionRepository) -> None:
    ids = [(await repo.create(new())).id for _ in range(5)]
    page, total = await repo.list(2, 1)
    assert total == 5
    assert [r.id for r in page] == sorted(ids)[1:3]
    everything, _ = await repo.list(100, 0)
    assert [r.id for r in everything] == sorted(ids)
    assert await repo.list(10, 5) == ([], 5)


async def test_delete_removes_the_row(repo: ConnectionRepository) -> None:
    created = await repo.create(new())
    await repo.delete(created.id)
    with pytest.raises(ConnectionNotFound):
        await repo.get(created.id)
    with pytest.raises(ConnectionNotFound):
        await repo.delete(created.id)


@pytest.mark.parametrize("change", [{"host": "10.0.0.9"}, {"port": 6543}])
async def test_moving_host_or_port_needs_the_password(
    repo: ConnectionRepository, change: dict[str, Any]
) -> None:
    created = await repo.create(new())
    with pytest.raises(ValidationFailed) as info:
        await repo.update(created.id, change)
    assert info.value.message == "changing host or port requires the password again"
    assert info.value.details == {"field": "password"}
    assert await repo.get(created.id) == created  # nothing written

    moved = await repo.update(created.id, change | {"password": SecretStr("new-pw")})
    assert moved.config_version == 2
    config = await repo.load_config(created.id)
    assert config.password.get_secret_value() == "new-pw"


async def test_same_host_and_port_need_no_password(repo: ConnectionRepository) -> None:
    created = await repo.create(new())
    same = await repo.update(created.id, {"host": created.host, "port": created.port})
    assert same.config_version == 1


async def test_pool_affecting_changes_bump_the_version(repo: ConnectionRepository) -> None:
    created = await repo.create(new())
    renamed = await repo.update(created.id, {"name": created.name + "-x", "description": "d"})
    assert renamed.config_version == 1
    assert renamed.updated_at > created.updated_at
    assert renamed.created_at == created.created_at

    bigger = await repo.update(created.id, {"max_connections": 20})
    assert bigger.config_version == 2
    assert bigger.max_connections == 20
    unchanged = await repo.update(created.id, {"max_connections": 20})
    assert unchanged.config_version == 2
    changes: list[dict[str, Any]] = [
        {"read_only": True},
        {"options": {"ssl": True}},
        {"query_timeout": 5.0},
        {"password": SecretStr("rotated")},
        {"db_type": "mariadb", "port": 3306, "password": SecretStr("x")},
    ]
    for version, change in enumerate(changes, start=3):
        updated = await repo.update(created.id, change)
        assert updated.config_version == version, change
    assert (await repo.get(created.id)).db_type is DbType.MARIADB


async def test_concurrent_updates_never_lose_a_bump(repo: ConnectionRepository) -> None:
    created = await repo.create(new())
    await asyncio.gather(*(repo.update(created.id, {"query_timeout": 10.0 + i}) for i in range(4)))
    assert (await repo.get(created.id)).config_version == 5


async def test_min_above_max_names_the_field(repo: ConnectionRepository) -> None:
    created = await repo.create(new(max_connections=5, min_connections=2))
    with pytest.raises(ValidationFailed) as info:
        await repo.update(created.id, {"min_connections": 6})
    assert info.value.details == {"field": "minConnections"}
    with pytest.raises(ValidationFailed) as info:
        await repo.update(created.id, {"max_connections": 1})  # below the stored min of 2
    assert info.value.details == {"field": "minConnections"}
    assert (await repo.get(created.id)).config_version == 1


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"max_connections": 0}, "maxConnections"),
        ({"max_connections": 1001}, "maxConnections"),
        ({"min_connections": -1}, "minConnections"),
        ({"port": 0}, "port"),
        ({"port": 65536}, "port"),
        ({"connection_timeout": 0}, "connectionTimeout"),
        ({"query_timeout": -1.0}, "queryTimeout"),
        ({"name": ""}, "name"),
        ({"name": "n" * 101}, "name"),
        ({"db_type": "oracle"}, "dbType"),
    ],
)
async def test_out_of_range_values_are_refused(
    repo: ConnectionRepository, overrides: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationFailed) as info:
        await repo.create(new(**overrides))
    assert info.value.details == {"field": field}
    assert (await repo.list(10, 0))[1] == 0


@pytest.mark.parametrize(
    ("changes", "field"),
    [({"id": 5}, "id"), ({"config_version": 9}, "config_version"), ({"port": None}, "port")],
)
async def test_bad_update_keys_are_refused(
    repo: ConnectionRepository, changes: dict[str, Any], field: str
) -> None:
    created = await repo.create(new())
    with pytest.raises(ValidationFailed) as info:
        await repo.update(created.id, changes)
    assert info.value.details == {"field": field}


async def test_the_database_checks_back_the_rules_up(
    repo: ConnectionRepository, registry_url: str
) -> None:
    """Bypassing the repository's checks, the table's CHECK constraints still refuse."""
    created = await repo.create(new())
    engine = create_registry_engine(registry_url)
    sessions = create_sessionmaker(engine)
    with pytest.raises(IntegrityError):
        async with sessions.begin() as session:
            row = await session.get(ExternalDbConnection, created.id)
            assert row is not None
            row.max_connections = 5000
    with pytest.raises(IntegrityError):
        async with sessions.begin() as session:
            session.add(
                ExternalDbConnection(
                    name="bad", db_type="oracle", host="h", port=1, database="d",
                    username="u", password_encrypted="x",
                )
            )  # fmt: skip
    await engine.dispose()


async def test_load_config_and_resolver(repo: ConnectionRepository) -> None:
    spec = new(max_connections=4, min_connections=1, read_only=True, options={"a": 1})
    created = await repo.create(spec)
    resolver: ConfigResolver = RegistryResolver(repo)
    config = await resolver.resolve(created.id)
    assert config.id == created.id
    assert config.pool_name == f"dbpool:{created.id}"
    assert config.password.get_secret_value() == spec.password.get_secret_value()
    assert (config.max_connections, config.min_connections) == (4, 1)
    assert config.read_only is True
    assert config.options == {"a": 1}
    assert config.config_version == 1
    assert await resolver.config_versions() == {created.id: 1}


async def test_inactive_connection_is_refused_and_unversioned(repo: ConnectionRepository) -> None:
    active = await repo.create(new())
    inactive = await repo.create(new(is_active=False))
    with pytest.raises(ConnectionInactive) as info:
        await repo.load_config(inactive.id)
    assert info.value.status == 409
    assert await repo.config_versions() == {active.id: 1}

    await repo.update(active.id, {"is_active": False})
    assert await repo.config_versions() == {}
    revived = await repo.update(inactive.id, {"is_active": True})
    assert revived.config_version == 2
    assert await repo.config_versions() == {inactive.id: 2}


async def test_records_are_frozen(repo: ConnectionRepository) -> None:
    created = await repo.create(new())
    with pytest.raises(AttributeError):
        created.name = "x"  # type: ignore[misc]
    assert replace(created, name="y").name == "y"
