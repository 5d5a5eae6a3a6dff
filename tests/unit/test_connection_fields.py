"""One source for a connection's fields: ``app.domain.ConnectionFields``.

Every view of a registration (the pools' config, the registry's records and table, the three
API schemas) must cover exactly those fields plus the view's own, with the same defaults and
nullability, and a value must travel through every conversion unchanged. A field added in
one place and not followed everywhere fails here (README: "Adding a connection field").
"""

from __future__ import annotations

import dataclasses
import typing
from datetime import UTC, datetime
from types import NoneType, UnionType
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr, ValidationError
from pydantic.alias_generators import to_camel

from app.api.schemas.connections import (
    ConnectionCreate,
    ConnectionOptions,
    ConnectionPublic,
    ConnectionUpdate,
)
from app.domain import (
    CONNECTION_FIELDS,
    NULLABLE_FIELDS,
    ROW_FIELDS,
    UNVERSIONED_FIELDS,
    VIEW_FIELDS,
    ConnectionConfig,
    ConnectionFields,
    DbType,
)
from app.registry.models import ExternalDbConnection
from app.registry.records import (
    ConnectionRecord,
    NewConnection,
    stored_values,
    to_config,
    to_record,
)
from app.registry.repository import UPDATABLE_FIELDS

OWN = frozenset(CONNECTION_FIELDS)
FIELDS = {f.name: f for f in dataclasses.fields(ConnectionFields)}
TABLE = ExternalDbConnection.__table__


def dataclass_names(cls: type[Any]) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def schema_names(model: type[BaseModel]) -> set[str]:
    return set(model.model_fields)


def has_default(name: str) -> bool:
    f = FIELDS[name]
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


def domain_default(name: str) -> Any:
    f = FIELDS[name]
    factory = f.default_factory
    return f.default if factory is dataclasses.MISSING else factory()


def test_the_source_is_one_ordered_list_of_distinct_names() -> None:
    assert len(OWN) == len(CONNECTION_FIELDS) > 0
    assert NULLABLE_FIELDS <= OWN
    assert UNVERSIONED_FIELDS <= OWN
    assert not OWN & {*VIEW_FIELDS, *ROW_FIELDS}


def test_the_domain_and_registry_types_inherit_exactly_the_fields() -> None:
    assert dataclass_names(NewConnection) == OWN | set(VIEW_FIELDS)
    assert dataclass_names(ConnectionRecord) == OWN | {"replicas", "has_password", *ROW_FIELDS}
    assert dataclass_names(ConnectionConfig) == OWN | {
        "id", "password", "config_version", "replicas", "node", "weight"
    }


def test_the_table_has_a_column_per_field() -> None:
    assert set(TABLE.columns.keys()) == OWN | {"password_encrypted", "replicas", *ROW_FIELDS}


@pytest.mark.parametrize("name", CONNECTION_FIELDS)
def test_each_column_has_the_domain_default_and_nullability(name: str) -> None:
    column = TABLE.columns[name]
    assert column.nullable == (name in NULLABLE_FIELDS)
    default = column.default
    if not has_default(name) or domain_default(name) is None:
        assert default is None
        return
    assert default is not None
    value = default.arg(None) if default.is_callable else default.arg
    assert value == domain_default(name)


def test_the_api_schemas_cover_exactly_the_fields() -> None:
    assert schema_names(ConnectionCreate) == OWN | set(VIEW_FIELDS)
    assert schema_names(ConnectionUpdate) == OWN | set(VIEW_FIELDS)
    assert schema_names(ConnectionPublic) == OWN | {"replicas", *ROW_FIELDS}
    assert set(UPDATABLE_FIELDS) == OWN | set(VIEW_FIELDS)


@pytest.mark.parametrize("name", CONNECTION_FIELDS)
def test_create_has_the_domain_default(name: str) -> None:
    info = ConnectionCreate.model_fields[name]
    if name == "port":  # not required: the engine's usual port, from dbType
        assert info.default is None
    elif not has_default(name):
        assert info.is_required()
    else:
        value = info.get_default(call_default_factory=True)
        stored = value.stored() if isinstance(value, ConnectionOptions) else value
        assert stored == domain_default(name)


@pytest.mark.parametrize("name", [*CONNECTION_FIELDS, *VIEW_FIELDS])
def test_update_takes_null_only_for_nullable_fields(name: str) -> None:
    body = {to_camel(name): None}
    if name in NULLABLE_FIELDS:
        update = ConnectionUpdate.model_validate(body)
        assert update.changes(DbType.POSTGRESQL) == {name: None}
    else:
        with pytest.raises(ValidationError, match="must not be null"):
            ConnectionUpdate.model_validate(body)


def sample(name: str, hint: Any) -> Any:
    """A value for field ``name`` the API accepts and that differs from its default."""
    args = set(typing.get_args(hint))
    if isinstance(hint, UnionType) and NoneType in args:  # X | None: a value of X
        (hint,) = args - {NoneType}
    if typing.get_origin(hint) is not None:
        hint = typing.get_origin(hint)
    default = domain_default(name) if has_default(name) else None
    if hint is bool:
        return not default
    if hint is int:
        return 6543 if default is None else default + 1
    if hint is float:
        return 2.5 if default is None else default + 1.5
    if hint is str:
        return f"s-{name.replace('_', '-')}"
    if hint is DbType:
        return DbType.MARIADB
    if hint is typing.get_origin(typing.Mapping[str, Any]):
        return {"ssl": "require"}
    raise AssertionError(f"no sample for {name}: {hint!r}; add one in this test")


SAMPLE = {
    name: sample(name, hint)
    for name, hint in typing.get_type_hints(ConnectionFields).items()
}


def wire(value: Any) -> Any:
    return value.value if isinstance(value, DbType) else value


def test_a_value_of_every_field_travels_through_every_view() -> None:
    body = ConnectionCreate.model_validate(
        {to_camel(name): wire(value) for name, value in SAMPLE.items()} | {"password": "pw"}
    )
    # What the create route does with the body.
    new = NewConnection(**body.model_dump(exclude={"replicas"}), replicas=body.replica_nodes())
    now = datetime(2026, 1, 2, tzinfo=UTC)
    row = ExternalDbConnection(
        **stored_values(new), id=7, password_encrypted="token", replicas=[],
        created_at=now, updated_at=now, config_version=3,
    )
    record = to_record(row)
    config = to_config(row, SecretStr("pw"))
    public = ConnectionPublic.model_validate(record, from_attributes=True).model_dump(
        mode="json", by_alias=True
    )
    for name, value in SAMPLE.items():
        assert getattr(new, name) == value, name
        assert getattr(row, name) == wire(value), name
        assert getattr(record, name) == value, name
        assert getattr(config, name) == value, name
        assert public[to_camel(name)] == wire(value), name
    assert "password" not in public and "pw" not in repr(config)
