"""Shorthand for the oracle's hand-worked cases: stages whose conditions are named after them,
events given as letters or numbers at timestamps 0, 1, 2, ..., results as index tuples."""

from __future__ import annotations

from typing import Any

from processor.spec.patterns import PatternSpec
from processor.timeutil.watermark import NO_WATERMARK
from tests.unit.operators.patterns.pattern_oracle import Outcome, run_oracle


def pattern(*stages: dict[str, Any], within: int = 100, skip: Any = "past_last_event") -> PatternSpec:
    return PatternSpec(stages=list(stages), within=within, skip=skip, timeouts="drop", late="drop")


def st(name: str, **kw: Any) -> dict[str, Any]:
    """A positive stage whose condition (given to the oracle separately) is named after it."""
    return {"name": name, "where": "True", **kw}


def neg(name: str, kind: str = "not_followed_by") -> dict[str, Any]:
    return {"name": name, kind: "True"}


def letter(ch: str):
    return lambda v, m, s: v == ch


LETTERS = {n: letter(n) for n in "abcn"}


def x(pred):
    return lambda v, m, s: pred(v)


def run(spec: PatternSpec, events: list[tuple[Any, int]], conds: dict[str, Any] = LETTERS,
        final_watermark: int | None = None) -> Outcome:
    return run_oracle(spec, conds, [(v, t, NO_WATERMARK) for v, t in events], final_watermark)


def seq(values: str | list[Any]) -> list[tuple[Any, int]]:
    """Events at timestamps 0, 1, 2, ..."""
    return [(v, t) for t, v in enumerate(values)]


def indices(cands) -> list[tuple[int, ...]]:
    return [tuple(i for _, i in c) for c in cands]
