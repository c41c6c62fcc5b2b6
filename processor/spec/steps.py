"""The steps of a pipeline: one model per step kind, and `Step`, the union a step list holds."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Discriminator, Field, Tag, field_validator, model_validator

from processor.spec.base import REF_PATTERN, DurationMs, OnError, Strict
from processor.spec.patterns import PatternSpec
from processor.spec.topics import SinkSpec

STEP_KINDS = ("filter", "map", "flat_map", "key_by", "window", "aggregate", "process", "python",
              "join", "interval_join", "reconcile", "pattern", "branch", "to")


class PythonRef(Strict):
    python: str = Field(pattern=REF_PATTERN)


class FieldsProjection(Strict):
    """`map: {fields: {out_name: expression}}` builds a new dict value."""

    fields: dict[str, str] = Field(min_length=1)


class PythonReducer(Strict):
    """`fn(accumulator, key, value) -> accumulator`; the accumulator must be JSON-serializable.
    `merge(earlier, later) -> accumulator` combines two accumulators (session windows need it)."""

    python: str = Field(pattern=REF_PATTERN)
    initial: Any = None
    merge: str | None = Field(default=None, pattern=REF_PATTERN)


class AggregateSpec(Strict):
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


class HoppingSpec(Strict):
    size: DurationMs
    advance: DurationMs

    @model_validator(mode="after")
    def _sizes(self) -> HoppingSpec:
        if self.size <= 0 or self.advance <= 0:
            raise ValueError("size and advance must be positive")
        if self.advance > self.size:
            raise ValueError(f"advance ({self.advance} ms) must not exceed size ({self.size} ms)")
        return self


class SessionSpec(Strict):
    gap: DurationMs


class CountSpec(Strict):
    size: int = Field(ge=1)
    slide: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _slide(self) -> CountSpec:
        if self.slide is not None and self.slide > self.size:
            raise ValueError(f"slide ({self.slide}) must not exceed size ({self.size})")
        return self


WINDOW_KINDS = ("tumbling", "hopping", "sliding", "session", "count")


class WindowSpec(Strict):
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


class ProcessSpec(Strict):
    """A keyed process function: `python(ctx, key, value)` per record and
    `on_timer(ctx, key, timestamp)` when a timer fires (processor/operators/process.py)."""

    python: str = Field(pattern=REF_PATTERN)
    on_timer: str | None = Field(default=None, pattern=REF_PATTERN)
    store: str | None = None


class _StepSpec(Strict):
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


class TableJoinSpec(Strict):
    """Enrich each record from a table: `value` becomes `{**value, <as>: table value}`."""

    table: str
    key: str | None = None  # lookup key expression; default the record key (global tables only)
    type: Literal["inner", "left"] = "inner"
    as_: str | None = Field(default=None, alias="as")  # default: the table's source name


class JoinStep(_StepSpec):
    join: TableJoinSpec


class IntervalJoinSpec(Strict):
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


class ReconcileSpec(Strict):
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


class PatternStep(_StepSpec):
    pattern: PatternSpec


class BranchCase(Strict):
    when: str
    steps: list[Step] = Field(min_length=1)


class DefaultCase(Strict):
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
    | Annotated[PatternStep, Tag("pattern")]
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


for _model in (BranchCase, DefaultCase, BranchStep):
    _model.model_rebuild()
