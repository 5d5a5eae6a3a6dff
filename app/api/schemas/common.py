"""Shapes shared by every endpoint: the camelCase base model and the response envelopes."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

__all__ = ["ApiModel", "Envelope", "ErrorBody", "ErrorEnvelope", "FieldProblem", "Page"]

T = TypeVar("T")


class ApiModel(BaseModel):
    """Base of every API schema: camelCase on the wire, snake_case in Python."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class Envelope(ApiModel, Generic[T]):
    """Every successful ``/api`` response."""

    success: bool = True
    data: T
    message: str = ""


class Page(ApiModel, Generic[T]):
    """One page of a list and the number of items in all pages."""

    items: list[T]
    total: int


class FieldProblem(ApiModel):
    """One failing field of a rejected request (never the submitted value)."""

    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(ApiModel):
    code: str = Field(examples=["CONNECTION_NOT_FOUND"])
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorEnvelope(ApiModel):
    """Every error response, under ``/api`` and elsewhere."""

    success: bool = False
    error: ErrorBody
    request_id: str | None = None
