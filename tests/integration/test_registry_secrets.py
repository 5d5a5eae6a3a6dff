"""Passwords in the registry: never stored, shown or logged in clear; keys rotate."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from pydantic import SecretStr
from sqlalchemy import delete, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.domain import DbType, ReplicaNode
from app.errors import ConnectionNameTaken, CredentialsUnreadable
from app.registry import (
    ConnectionRepository,
    ExternalDbConnection,
    NewConnection,
    SecretBox,
    create_registry_engine,
    create_sessionmaker,
    downgrade,
    generate_key,
    upgrade_to_head,
)
from tests.support.registry import KINDS, throwaway_registry

K1, K2, K3 = generate_key(), generate_key(), generate_key()


@pytest.fixture(scope="module", params=KINDS)
def registry_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    with throwaway_registry(request.param, tmp_path_factory.mktemp("secrets")) as url:
        asyncio.run(upgrade_to_head(url))
        yield url
        asyncio.run(downgrade(url))


@pytest.fixture
async def engine(registry_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_registry_engine(registry_url)
    async with engine.begin() as conn:  # the database is this module's alone
        await conn.execute(delete(ExternalDbConnection))
    yield engine
    await engine.dispose()


def repo_with(engine: AsyncEngine, *keys: str) -> ConnectionRepository:
    return ConnectionRepository(create_sessionmaker(engine), SecretBox(list(keys)))


def new(password: str, **overrides: object) -> NewConnection:
    values: dict[str, object] = {
        "name": f"sec-{uuid.uuid4().hex[:10]}",
        "db_type": DbType.MARIADB,
        "host": "127.0.0.1",
        "port": 3306,
        "database": "dbpool_test",
        "username": "dbpool_test",
        "password": SecretStr(password),
    }
    return NewConnection(**(values | overrides))  # type: ignore[arg-type]


def secret() -> str:
    return f"plain-{uuid.uuid4().hex}"


async def raw_rows(engine: AsyncEngine) -> list[tuple[object, ...]]:
    async with engine.connect() as conn:
        result = await conn.execute(text("SELECT * FROM external_db_connections ORDER BY id"))
        return [tuple(row) for row in result]


async def ciphertexts(engine: AsyncEngine) -> dict[int, str]:
    async with engine.connect() as conn:
        result = await conn.execute(
            select(ExternalDbConnection.id, ExternalDbConnection.password_encrypted)
        )
        return {row_id: token for row_id, token in result}


async def test_raw_table_never_holds_the_plaintext(engine: AsyncEngine) -> None:
    repo = repo_with(engine, K1)
    first, second = secret(), secret()
    created = await repo.create(new(first))
    await repo.update(created.id, {"password": SecretStr(second)})
    await repo.create(new(first))
    dump = repr(await raw_rows(engine))
    assert first not in dump
    assert second not in dump
    assert (await repo.load_config(created.id)).password.get_secret_value() == second


async def test_nothing_shows_the_password(
    engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    repo = repo_with(engine, K1)
    password = secret()
    spec = new(password)
    with caplog.at_level(logging.DEBUG):
        created = await repo.create(spec)
        config = await repo.load_config(created.id)
        with pytest.raises(ConnectionNameTaken) as info:
            await repo.create(new(password, name=spec.name))
    async with create_sessionmaker(engine)() as session:
        row = await session.get(ExternalDbConnection, created.id)
    assert row is not None
    token = row.password_encrypted
    shown = [
        repr(spec), str(spec), repr(created), repr(config), str(config), repr(row),
        repr(repo), caplog.text, str(info.value), repr(info.value),
        str(info.value.__cause__), repr(info.value.__cause__),
    ]  # fmt: skip
    for text_ in shown:
        assert password not in text_
        assert token not in text_
        assert K1 not in text_
    assert config.password.get_secret_value() == password


async def test_rotation_moves_every_row_to_the_new_key(engine: AsyncEngine) -> None:
    passwords = [secret() for _ in range(3)]
    old = repo_with(engine, K1)
    ids = [(await old.create(new(p))).id for p in passwords]
    before = await ciphertexts(engine)

    assert await repo_with(engine, K2, K1).rotate_keys() == 3

    after = await ciphertexts(engine)
    assert all(after[i] != before[i] for i in ids)
    only_new = repo_with(engine, K2)
    for row_id, password in zip(ids, passwords, strict=True):
        config = await only_new.load_config(row_id)
        assert config.password.get_secret_value() == password
        assert config.config_version == 1  # same password: pools need no rebuild
    with pytest.raises(CredentialsUnreadable):
        await repo_with(engine, K1).load_config(ids[0])


async def test_rotation_moves_replica_passwords_too(engine: AsyncEngine) -> None:
    main, own = secret(), secret()
    replicas = (ReplicaNode(host="127.0.0.2", port=3306, password=SecretStr(own)),
                ReplicaNode(host="127.0.0.3", port=3306))
    row_id = (await repo_with(engine, K1).create(new(main, replicas=replicas))).id

    assert await repo_with(engine, K2, K1).rotate_keys() == 1

    config = await repo_with(engine, K2).load_config(row_id)
    assert [n.password.get_secret_value() for n in config.nodes()] == [main, own, main]
    with pytest.raises(CredentialsUnreadable):
        await repo_with(engine, K1).load_config(row_id)


async def test_rotation_of_an_empty_registry_counts_zero(engine: AsyncEngine) -> None:
    assert await repo_with(engine, K2, K1).rotate_keys() == 0


async def test_an_unreadable_row_aborts_the_whole_rotation(engine: AsyncEngine) -> None:
    repo = repo_with(engine, K1)
    good = await repo.create(new(secret()))
    foreign = await repo_with(engine, K3).create(new(secret()))
    later = await repo.create(new(secret()))
    before = await ciphertexts(engine)

    with pytest.raises(CredentialsUnreadable) as info:
        await repo_with(engine, K2, K1).rotate_keys()
    assert f"connection {foreign.id}" in info.value.message
    assert "nothing changed" in info.value.message
    assert info.value.details == {"connectionId": foreign.id, "keysTried": 2}
    assert await ciphertexts(engine) == before  # one transaction: nothing moved
    assert {good.id, later.id} <= before.keys()


async def test_tampered_ciphertext_is_credentials_unreadable(engine: AsyncEngine) -> None:
    repo = repo_with(engine, K1)
    created = await repo.create(new(secret()))
    token = (await ciphertexts(engine))[created.id]
    tampered = token[:-8] + ("A" * 8 if not token.endswith("A" * 8) else "B" * 8)
    async with engine.begin() as conn:
        await conn.execute(
            update(ExternalDbConnection)
            .where(ExternalDbConnection.id == created.id)
            .values(password_encrypted=tampered)
        )
    with pytest.raises(CredentialsUnreadable) as info:
        await repo.load_config(created.id)
    assert info.value.status == 500
    assert f"connection {created.id}" in info.value.message
    assert "1 configured encryption key(s)" in info.value.message
    assert info.value.details == {"connectionId": created.id, "keysTried": 1}
    assert (await repo.get(created.id)).has_password  # metadata stays readable
