"""The `pattern` step: sequences of events per key in event time (complex event processing).

A pattern is an ordered list of stages. A positive stage takes events (`where`), one or more
times (`times`, `one_or_more`, `optional`); a negative stage (`not_next`, `not_followed_by`)
forbids an event between its neighbours. How a stage follows the one before it is its `after`
contiguity; how a repeated stage's own events follow each other is its `inner` contiguity.
The semantics (what is a match, what times out, what a skip strategy discards) are written in
processor/operators/patterns/__init__.py and in the README; these models only check what one
stage or the pattern can say about itself without compiling expressions (graph/steps/pattern.py
checks the expressions and stage references).
"""

from __future__ import annotations

import re
from itertools import pairwise
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from processor.spec.base import REF_PATTERN, DurationMs, Strict
from processor.spec.topics import SinkSpec

Contiguity = Literal["next", "followed_by", "followed_by_any"]
STAGE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
UNBOUNDED = None  # a stage's `max` when it repeats without bound


class TimesSpec(Strict):
    min: int = Field(ge=0)
    max: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _order(self) -> TimesSpec:
        if self.max is not None and self.max < self.min:
            raise ValueError(f"max ({self.max}) must not be below min ({self.min})")
        return self


class StageSpec(Strict):
    """One stage. Exactly one of `where` (positive), `not_next` or `not_followed_by` (negative)."""

    name: str
    where: str | None = None
    not_next: str | None = None
    not_followed_by: str | None = None
    times: int | TimesSpec | None = None
    one_or_more: bool = False
    optional: bool = False
    greedy: bool = False
    after: Contiguity | None = None
    inner: Contiguity | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not STAGE_NAME.match(v):
            raise ValueError(f"a stage name is a letter or _ then letters, digits or _ "
                             f"(it is a key of `match` in expressions), got {v!r}")
        return v

    @model_validator(mode="after")
    def _one_kind(self) -> StageSpec:
        given = [k for k in ("where", "not_next", "not_followed_by") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("a stage has exactly one of: where (events it takes), not_next, "
                             "not_followed_by (events that must not occur)"
                             + (f"; got {', '.join(given)}" if given else ""))
        if isinstance(self.times, int) and self.times < 1:
            raise ValueError(f"times must be at least 1, got {self.times}")
        if self.times is not None and self.one_or_more:
            raise ValueError("say `times` or `one_or_more`, not both")
        if self.negative:
            extra = [k for k in ("times", "one_or_more", "optional", "greedy", "inner")
                     if k in self.model_fields_set]
            if extra:
                raise ValueError(f"a negative stage matches no events: {', '.join(extra)} "
                                 "does not apply to it")
            return self
        if self.greedy and self.max == self.min:
            raise ValueError("greedy needs a stage that may repeat a varying number of times "
                             "(times: {min, max} or one_or_more)")
        if self.inner is not None and self.max == 1:
            raise ValueError("inner contiguity is how a repeated stage's events follow each "
                             "other; this stage takes one event")
        if self.greedy and self.inner == "followed_by_any":
            raise ValueError("greedy and inner: followed_by_any contradict each other (any later "
                             "event may be taken, so none is 'as many as possible')")
        return self

    @property
    def negative(self) -> bool:
        return self.where is None

    @property
    def condition(self) -> str:
        cond = self.where or self.not_next or self.not_followed_by
        assert cond is not None
        return cond

    @property
    def kind(self) -> str:
        return ("where" if self.where is not None
                else "not_next" if self.not_next is not None else "not_followed_by")

    @property
    def min(self) -> int:
        base = (self.times if isinstance(self.times, int)
                else self.times.min if self.times is not None else 1)
        return 0 if self.optional else base

    @property
    def max(self) -> int | None:
        if self.one_or_more:
            return UNBOUNDED
        if isinstance(self.times, int):
            return self.times
        if self.times is not None:
            return self.times.max
        return 1


class SkipToStage(Strict):
    to_first: str | None = None
    to_last: str | None = None

    @model_validator(mode="after")
    def _one(self) -> SkipToStage:
        if (self.to_first is None) == (self.to_last is None):
            raise ValueError("say one of to_first or to_last (a stage name)")
        return self

    @property
    def stage(self) -> str:
        return self.to_first or self.to_last or ""


SkipSpec = Literal["no_skip", "past_last_event", "to_next"] | SkipToStage


class PatternSelect(Strict):
    """`select: {fields: {...}}` or its shorthand `select: {name: expression, ...}`, or
    `select: {python: module:function}`."""

    fields: dict[str, str] | None = None
    python: str | None = Field(default=None, pattern=REF_PATTERN)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, dict) and not ({"fields", "python"} & set(data)):
            return {"fields": data}
        return data

    @model_validator(mode="after")
    def _one(self) -> PatternSelect:
        if (self.fields is None) == (self.python is None):
            raise ValueError("select is {name: expression, ...} or {python: module:function}")
        if self.fields is not None and not self.fields:
            raise ValueError("select needs at least one field")
        return self


class PatternSpec(Strict):
    stages: list[StageSpec] = Field(min_length=1)
    within: DurationMs
    skip: SkipSpec = "past_last_event"
    select: PatternSelect | None = None
    timeouts: Literal["drop"] | SinkSpec
    late: Literal["drop"] | SinkSpec
    store: str | None = None

    @model_validator(mode="after")
    def _shape(self) -> PatternSpec:
        if self.within <= 0:
            raise ValueError("within must be positive")
        stages = self.stages
        names = [s.name for s in stages]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"stage names must be unique: {', '.join(dup)}")
        if stages[0].negative:
            raise ValueError("a pattern cannot start with a negative stage (it forbids events "
                             "after the stage before it)")
        if stages[-1].kind == "not_next":
            raise ValueError(f"a pattern cannot end with not_next (stage {stages[-1].name!r}): "
                             "end it with not_followed_by, which holds until `within` passes")
        if stages[0].after is not None:
            raise ValueError(f"stage {stages[0].name!r} is the first: nothing comes before it, "
                             "so `after` does not apply")
        for a, b in pairwise(stages):
            if a.negative and b.negative:
                raise ValueError(f"stages {a.name!r} and {b.name!r}: two negative stages in a "
                                 "row; put both conditions in one")
        if all(s.min == 0 for s in stages if not s.negative):
            raise ValueError("every stage is optional: a match needs at least one event")
        for i, s in enumerate(stages):
            if s.greedy and all(t.negative or t.min == 0 for t in stages[i + 1:]):
                raise ValueError(f"stage {s.name!r} is greedy but no required stage follows "
                                 "it: a match would never know the stage has ended")
        if isinstance(self.skip, SkipToStage):
            target = next((s for s in stages if s.name == self.skip.stage), None)
            if target is None or target.negative:
                raise ValueError(f"skip to {self.skip.stage!r}: no positive stage of that name "
                                 f"(stages: {', '.join(s.name for s in stages if not s.negative)})")
        return self
