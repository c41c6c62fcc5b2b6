"""Pydantic models of the topology YAML. Field names here are the YAML reference."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from processor.serde import FORMATS

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")
STEP_KINDS = ("filter", "map", "flat_map", "key_by", "aggregate", "python", "to")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class SerdeSpec(_Strict):
    format: str = "json"

    @field_validator("format")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in FORMATS:
            raise ValueError(f"unknown format {v!r} (known: {', '.join(FORMATS)})")
        return v


class TimestampSpec(_Strict):
    """Event time from a value field (epoch number); absent = the Kafka record timestamp."""

    field: str
    unit: Literal["ms", "s"] = "ms"


class SourceSpec(_Strict):
    topic: str
    key: SerdeSpec = SerdeSpec(format="string")
    value: SerdeSpec = SerdeSpec(format="json")
    timestamp: TimestampSpec | None = None


class SinkSpec(_Strict):
    topic: str
    key: SerdeSpec = SerdeSpec(format="string")
    value: SerdeSpec = SerdeSpec(format="json")
    partitions: int | None = Field(
        default=None, ge=1, description="create the topic with this many partitions if missing"
    )


class PythonRef(_Strict):
    python: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


class FieldsProjection(_Strict):
    """`map: {fields: {out_name: expression}}` builds a new dict value."""

    fields: dict[str, str] = Field(min_length=1)


class PythonReducer(_Strict):
    """`fn(accumulator, key, value) -> accumulator`; the accumulator must be JSON-serializable."""

    python: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
    initial: Any = None


class AggregateSpec(_Strict):
    """Per-key aggregate. Reserved keys `store` and `emit`; every other key is an output field."""

    store: str | None = None
    emit: Literal["on_checkpoint", "every_record"] = "on_checkpoint"
    fields: dict[str, str | PythonReducer] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _collect_fields(cls, data: Any) -> Any:
        if isinstance(data, dict) and "fields" not in data:
            reserved = {"store", "emit"}
            fields = {k: v for k, v in data.items() if k not in reserved}
            data = {k: v for k, v in data.items() if k in reserved} | {"fields": fields}
        return data


class FilterStep(_Strict):
    filter: str


class MapStep(_Strict):
    map: str | FieldsProjection | PythonRef


class FlatMapStep(_Strict):
    flat_map: str | PythonRef


class KeyByStep(_Strict):
    key_by: str | PythonRef


class AggregateStep(_Strict):
    aggregate: AggregateSpec


class PythonStep(_Strict):
    python: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


class ToStep(_Strict):
    to: str | SinkSpec


def _step_kind(value: Any) -> str | None:
    if isinstance(value, dict) and len(value) == 1:
        kind = next(iter(value))
        return kind if kind in STEP_KINDS else None
    if isinstance(value, BaseModel):
        return next(k for k in STEP_KINDS if k in type(value).model_fields)
    return None


Step = Annotated[
    Annotated[FilterStep, Tag("filter")]
    | Annotated[MapStep, Tag("map")]
    | Annotated[FlatMapStep, Tag("flat_map")]
    | Annotated[KeyByStep, Tag("key_by")]
    | Annotated[AggregateStep, Tag("aggregate")]
    | Annotated[PythonStep, Tag("python")]
    | Annotated[ToStep, Tag("to")],
    Discriminator(
        _step_kind,
        custom_error_type="unknown_step",
        custom_error_message=(
            "a step is a mapping with exactly one key, one of: " + ", ".join(STEP_KINDS)
        ),
    ),
]


class PipelineSpec(_Strict):
    from_: str = Field(alias="from")
    name: str | None = None
    steps: list[Step] = Field(min_length=1)


class TopologySpec(_Strict):
    name: str
    sources: dict[str, SourceSpec] = Field(min_length=1)
    sinks: dict[str, SinkSpec] = Field(default_factory=dict)
    pipelines: list[PipelineSpec] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _valid_name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(
                "name must start with a letter or digit and contain only letters, digits, "
                "'.', '_' or '-' (it becomes the consumer group id and topic prefix)"
            )
        return v
