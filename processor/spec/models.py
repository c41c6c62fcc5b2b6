"""Pydantic models of the topology YAML. Field names here are the YAML reference."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from processor.serde import FORMATS
from processor.timeutil import parse_duration_ms

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")
STEP_KINDS = ("filter", "map", "flat_map", "key_by", "window", "aggregate", "process", "python",
              "join", "interval_join", "reconcile", "branch", "to")
REF_PATTERN = r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$"
OnError = Literal["dlq", "skip", "fail"]
"""What happens to a record that fails: dead-letter topic, drop (counted), or stop the worker."""
SCHEMA_FORMATS = ("avro", "avro_registry")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class SerdeSpec(_Strict):
    """A key or value format. `schema` is a file next to the topology: an Avro schema (.avsc)
    for `avro` / `avro_registry`, a JSON Schema for `json` (values are validated)."""

    format: str = "json"
    schema_file: str | None = Field(default=None, alias="schema")
    reader_schema: str | None = None
    subject: str | None = None

    @field_validator("format")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in FORMATS:
            raise ValueError(f"unknown format {v!r} (known: {', '.join(FORMATS)})")
        return v

    @model_validator(mode="after")
    def _fits_format(self) -> SerdeSpec:
        fmt = self.format
        if fmt == "avro" and self.schema_file is None:
            raise ValueError("format avro needs `schema: <file.avsc>` (the writer schema)")
        if self.schema_file is not None and fmt in ("string", "bytes"):
            raise ValueError(f"format {fmt} takes no schema (schemas: json, avro, avro_registry)")
        if self.reader_schema is not None and fmt not in SCHEMA_FORMATS:
            raise ValueError("reader_schema is for avro and avro_registry only")
        if self.subject is not None and fmt != "avro_registry":
            raise ValueError("subject is for avro_registry only")
        return self


def _duration(value: Any) -> int:
    if value is None:
        raise ValueError("a duration is required (e.g. '5s')")
    return parse_duration_ms(value)


DurationMs = Annotated[int, BeforeValidator(_duration)]
"""'250ms', '5s', '1m', '2h', '1d', or a number of milliseconds."""


class TimestampSpec(_Strict):
    """Event time from a value field; absent = the Kafka record timestamp.

    unit: `ms` / `s` = epoch number (milliseconds / seconds, fractions allowed),
    `iso` = ISO-8601 string (a time without offset is UTC)."""

    field: str
    unit: Literal["ms", "s", "iso"] = "ms"


class WatermarkSpec(_Strict):
    """Per source partition: watermark = max event time seen - max_out_of_orderness.
    A partition without input for `idle_timeout` stops holding back downstream watermarks."""

    max_out_of_orderness: DurationMs = 0
    idle_timeout: DurationMs | None = None

    @field_validator("idle_timeout")
    @classmethod
    def _positive(cls, v: int | None) -> int | None:
        if v is not None and v <= 0:
            raise ValueError("idle_timeout must be positive (omit it to never mark a partition idle)")
        return v


SourceKind = Literal["stream", "table", "global_table", "broadcast"]
"""stream: records to process. table: the latest value per key of a (compacted) topic, held per
task (partition p of the table next to partition p of the stream joining it). global_table: the
whole topic on every worker. broadcast: the whole topic in memory on every worker, readable by
expressions as `broadcast['<name>']` and by process functions as `ctx.broadcast['<name>']`."""


class SourceSpec(_Strict):
    topic: str
    kind: SourceKind = "stream"
    partitions: int | None = Field(
        default=None, ge=1,
        description="the topic's partition count, if known: validate checks co-partitioning with "
                    "it; the worker checks it against the broker at start")
    key: SerdeSpec = SerdeSpec(format="string")
    value: SerdeSpec = SerdeSpec(format="json")
    timestamp: TimestampSpec | None = None
    watermark: WatermarkSpec = WatermarkSpec()
    on_error: OnError | None = None  # records that fail to decode; default: the topology's


class SinkSpec(_Strict):
    topic: str
    key: SerdeSpec = SerdeSpec(format="string")
    value: SerdeSpec = SerdeSpec(format="json")
    partitions: int | None = Field(
        default=None, ge=1, description="create the topic with this many partitions if missing"
    )


class PythonRef(_Strict):
    python: str = Field(pattern=REF_PATTERN)


class FieldsProjection(_Strict):
    """`map: {fields: {out_name: expression}}` builds a new dict value."""

    fields: dict[str, str] = Field(min_length=1)


class PythonReducer(_Strict):
    """`fn(accumulator, key, value) -> accumulator`; the accumulator must be JSON-serializable.
    `merge(earlier, later) -> accumulator` combines two accumulators (session windows need it)."""

    python: str = Field(pattern=REF_PATTERN)
    initial: Any = None
    merge: str | None = Field(default=None, pattern=REF_PATTERN)


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


class HoppingSpec(_Strict):
    size: DurationMs
    advance: DurationMs

    @model_validator(mode="after")
    def _sizes(self) -> HoppingSpec:
        if self.size <= 0 or self.advance <= 0:
            raise ValueError("size and advance must be positive")
        if self.advance > self.size:
            raise ValueError(f"advance ({self.advance} ms) must not exceed size ({self.size} ms)")
        return self


class SessionSpec(_Strict):
    gap: DurationMs


class CountSpec(_Strict):
    size: int = Field(ge=1)
    slide: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _slide(self) -> CountSpec:
        if self.slide is not None and self.slide > self.size:
            raise ValueError(f"slide ({self.slide}) must not exceed size ({self.size})")
        return self


WINDOW_KINDS = ("tumbling", "hopping", "sliding", "session", "count")


class WindowSpec(_Strict):
    """Windows the aggregate that must follow it. Exactly one of the five kinds."""

    tumbling: DurationMs | None = None
    hopping: HoppingSpec | None = None
    sliding: DurationMs | None = None
    session: SessionSpec | None = None
    count: CountSpec | None = None
    allowed_lateness: DurationMs = 0
    emit: Literal["final", "updates"] = "final"
    late: Literal["drop"] | SinkSpec | None = None
    store: str | None = None

    @field_validator("session", mode="before")
    @classmethod
    def _session_shorthand(cls, v: Any) -> Any:
        return {"gap": v} if isinstance(v, str | int) and not isinstance(v, bool) else v

    @field_validator("count", mode="before")
    @classmethod
    def _count_shorthand(cls, v: Any) -> Any:
        return {"size": v} if isinstance(v, int) and not isinstance(v, bool) else v

    @model_validator(mode="after")
    def _one_kind(self) -> WindowSpec:
        given = [k for k in WINDOW_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("a window needs exactly one of: " + ", ".join(WINDOW_KINDS)
                             + (f" (got {', '.join(given)})" if given else ""))
        for k in ("tumbling", "sliding"):
            if getattr(self, k) is not None and getattr(self, k) <= 0:
                raise ValueError(f"{k} size must be positive")
        if self.session is not None and self.session.gap <= 0:
            raise ValueError("session gap must be positive")
        if self.late is None:
            raise ValueError("say where late records go: `late: drop` or `late: {topic: name}`")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in WINDOW_KINDS if getattr(self, k) is not None)


class ProcessSpec(_Strict):
    """A keyed process function: `python(ctx, key, value)` per record and
    `on_timer(ctx, key, timestamp)` when a timer fires (processor/operators/process.py)."""

    python: str = Field(pattern=REF_PATTERN)
    on_timer: str | None = Field(default=None, pattern=REF_PATTERN)
    store: str | None = None


class _StepSpec(_Strict):
    """Every step takes `on_error` next to its kind key; default: the topology's `on_error`."""

    on_error: OnError | None = None


class FilterStep(_StepSpec):
    filter: str


class MapStep(_StepSpec):
    map: str | FieldsProjection | PythonRef


class FlatMapStep(_StepSpec):
    flat_map: str | PythonRef


class KeyByStep(_StepSpec):
    key_by: str | PythonRef


class WindowStep(_StepSpec):
    window: WindowSpec


class AggregateStep(_StepSpec):
    aggregate: AggregateSpec


class ProcessStep(_StepSpec):
    process: ProcessSpec

    @field_validator("process", mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        return {"python": v} if isinstance(v, str) else v


class PythonStep(_StepSpec):
    python: str = Field(pattern=REF_PATTERN)


class ToStep(_StepSpec):
    to: str | SinkSpec


class TableJoinSpec(_Strict):
    """Enrich each record from a table: `value` becomes `{**value, <as>: table value}`."""

    table: str
    key: str | None = None  # lookup key expression; default the record key (global tables only)
    type: Literal["inner", "left"] = "inner"
    as_: str | None = Field(default=None, alias="as")  # default: the table's source name


class JoinStep(_StepSpec):
    join: TableJoinSpec


class IntervalJoinSpec(_Strict):
    """Records of the other stream with `ts - before <= their ts <= ts + after` join this one."""

    with_: str = Field(alias="with")
    before: DurationMs
    after: DurationMs
    type: Literal["inner", "left", "outer"] = "inner"
    key: str | None = None  # the other side's key expression; default its record key
    store: str | None = None

    @model_validator(mode="after")
    def _non_negative(self) -> IntervalJoinSpec:
        if self.before < 0 or self.after < 0:
            raise ValueError("before and after must not be negative")
        return self


class IntervalJoinStep(_StepSpec):
    interval_join: IntervalJoinSpec


class ReconcileSpec(_Strict):
    """Match records of this stream and `with` streams by business id (the record key here,
    `keys[name]` on the others) within `timeout` of event time from the group's first record."""

    with_: list[str] = Field(alias="with", min_length=1)
    keys: dict[str, str] = Field(default_factory=dict)
    timeout: DurationMs
    mismatch: str | None = None
    store: str | None = None

    @field_validator("with_", mode="before")
    @classmethod
    def _one(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _keys_known(self) -> ReconcileSpec:
        if self.timeout <= 0:
            raise ValueError("timeout must be positive")
        unknown = set(self.keys) - set(self.with_)
        if unknown:
            raise ValueError(f"keys given for {', '.join(sorted(unknown))}, which are not in `with`")
        return self


class ReconcileStep(_StepSpec):
    reconcile: ReconcileSpec


class BranchCase(_Strict):
    when: str
    steps: list[Step] = Field(min_length=1)


class DefaultCase(_Strict):
    default: list[Step] = Field(min_length=1)


def _case_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        return "default" if "default" in value else "when" if "when" in value else None
    return "default" if isinstance(value, DefaultCase) else "when"


Case = Annotated[
    Annotated[BranchCase, Tag("when")] | Annotated[DefaultCase, Tag("default")],
    Discriminator(_case_kind, custom_error_type="unknown_case",
                  custom_error_message="a branch case is {when: <expression>, steps: [...]} "
                                       "or {default: [...steps]}"),
]


class BranchStep(_StepSpec):
    """Each record goes down the first case whose `when` holds, else down `default` (if any)."""

    branch: list[Case] = Field(min_length=1)

    @model_validator(mode="after")
    def _default_last(self) -> BranchStep:
        defaults = [i for i, c in enumerate(self.branch) if isinstance(c, DefaultCase)]
        if len(defaults) > 1:
            raise ValueError("a branch has at most one default case")
        if defaults and defaults[0] != len(self.branch) - 1:
            raise ValueError("the default case must come last (cases are tried in order)")
        return self


def _step_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        kinds = [k for k in value if k != "on_error"]
        return kinds[0] if len(kinds) == 1 and kinds[0] in STEP_KINDS else None
    if isinstance(value, BaseModel):
        return next(k for k in STEP_KINDS if k in type(value).model_fields)
    return None


Step = Annotated[
    Annotated[FilterStep, Tag("filter")]
    | Annotated[MapStep, Tag("map")]
    | Annotated[FlatMapStep, Tag("flat_map")]
    | Annotated[KeyByStep, Tag("key_by")]
    | Annotated[WindowStep, Tag("window")]
    | Annotated[AggregateStep, Tag("aggregate")]
    | Annotated[ProcessStep, Tag("process")]
    | Annotated[PythonStep, Tag("python")]
    | Annotated[JoinStep, Tag("join")]
    | Annotated[IntervalJoinStep, Tag("interval_join")]
    | Annotated[ReconcileStep, Tag("reconcile")]
    | Annotated[BranchStep, Tag("branch")]
    | Annotated[ToStep, Tag("to")],
    Discriminator(
        _step_kind,
        custom_error_type="unknown_step",
        custom_error_message=(
            "a step is a mapping with exactly one of: " + ", ".join(STEP_KINDS)
            + " (plus an optional on_error)"
        ),
    ),
]


class PipelineSpec(_Strict):
    from_: str | list[str] = Field(alias="from")  # several sources: their union (merge)
    name: str | None = None
    steps: list[Step] = Field(min_length=1)

    @field_validator("from_")
    @classmethod
    def _distinct(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and (not v or len(set(v)) != len(v)):
            raise ValueError("`from` lists each source once (and at least one)")
        return v

    @property
    def sources(self) -> list[str]:
        return [self.from_] if isinstance(self.from_, str) else list(self.from_)


class DeadLetterSpec(_Strict):
    """Where failed records go under `on_error: dlq` (default topic `<name>-dlq`)."""

    topic: str | None = None
    partitions: int = Field(default=1, ge=1)


class TopologySpec(_Strict):
    name: str
    sources: dict[str, SourceSpec] = Field(min_length=1)
    sinks: dict[str, SinkSpec] = Field(default_factory=dict)
    pipelines: list[PipelineSpec] = Field(min_length=1)
    on_error: OnError = "dlq"
    dlq: DeadLetterSpec = DeadLetterSpec()

    @property
    def dlq_topic(self) -> str:
        return self.dlq.topic or f"{self.name}-dlq"

    @field_validator("name")
    @classmethod
    def _valid_name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(
                "name must start with a letter or digit and contain only letters, digits, "
                "'.', '_' or '-' (it becomes the consumer group id and topic prefix)"
            )
        return v


for _model in (BranchCase, DefaultCase, BranchStep):
    _model.model_rebuild()
