"""A pattern compiled for matching: conditions as functions, and every run's continuations.

A run (a partial match, nfa.py) is at a positive stage `k` having taken `n` events there. What
it may do next depends only on (k, n) through three classes of n (below min, between min and
max, at max), so the continuations are tabulated once here: `conts[k][c]` lists them (the
stage itself again first, if it may repeat), `complete[k][c]` says whether the run is a
match. With a trailing `not_followed_by` stage a run that reached the end is *pending* instead:
its continuation to END, blocked by that stage's events, makes it a match at its expiry. The
runtime loop in nfa.py then only indexes tables.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from processor.expressions import BroadcastStates, compile_expression, load_callable
from processor.spec.patterns import PatternSpec, SkipToStage, StageSpec

COND_ARGS = ("key", "value", "timestamp", "match", "start")
SELECT_ARGS = ("key", "value", "timestamp", "match", "start", "end")
NEXT, RELAXED, ANY = 0, 1, 2
END = -1  # the target of a pending match's continuation: its expiry (a trailing negative stage)
_CONTIGUITY = {"next": NEXT, "followed_by": RELAXED, "followed_by_any": ANY}
BELOW, ROOM, FULL = 0, 1, 2  # the classes of a stage's count: < min, in [min, max), == max
NO_SKIP, PAST_LAST, TO_NEXT, TO_FIRST, TO_LAST = range(5)

Cond = Callable[..., Any]


@dataclass(frozen=True)
class Cont:
    """A way for a run to grow: into positive stage `target` with `contiguity`, checking the
    negative stages passed on the way, and (leaving a greedy stage) the greedy guard."""

    target: int
    contiguity: int
    not_next: tuple[Cond, ...] = ()
    not_followed_by: tuple[Cond, ...] = ()
    guard: Cond | None = None  # leaving a greedy stage with room: its condition
    guard_next: bool = False  # ... whose inner contiguity is `next` (only e_{p+1} counts)
    reads_match: bool = True  # some condition checked here reads `match`


@dataclass
class PatternProgram:
    names: list[str]  # positive stages, in pattern order
    conds: list[Cond]
    uses_match: list[bool]  # whether a stage's condition reads `match` (else it gets {})
    mins: list[int]
    maxs: list[int | None]
    within: int
    skip: int
    skip_stage: int = -1
    starts: list[int] = field(default_factory=list)  # stages a match may begin with
    conts: list[list[list[Cont]]] = field(default_factory=list)
    complete: list[list[bool]] = field(default_factory=list)
    select: Callable[..., Any] | None = None
    select_fields: dict[str, Callable[..., Any]] | None = None

    def count_class(self, k: int, n: int) -> int:
        if n < self.mins[k]:
            return BELOW
        mx = self.maxs[k]
        return FULL if mx is not None and n >= mx else ROOM


def reads_match(source: str) -> bool:
    return any(isinstance(n, ast.Name) and n.id == "match"
               for n in ast.walk(ast.parse(source.strip(), mode="eval")))


def stage_refs(source: str) -> list[str]:
    """The stage names an expression reads as `match['name']` (constant subscripts only)."""
    out = []
    for n in ast.walk(ast.parse(source.strip(), mode="eval")):
        if (isinstance(n, ast.Subscript) and isinstance(n.value, ast.Name)
                and n.value.id == "match" and isinstance(n.slice, ast.Constant)
                and isinstance(n.slice.value, str)):
            out.append(n.slice.value)
    return out


def compile_pattern(spec: PatternSpec, broadcast: BroadcastStates | None = None) -> PatternProgram:
    """Compile `spec`; raises ExpressionError for a bad expression (graph/steps/pattern.py
    checks every one first, naming its stage, file and line)."""
    stages = spec.stages
    positive = [s for s in stages if not s.negative]
    compiled: dict[str, Cond] = {s.name: _cond(s, broadcast) for s in stages}
    reads = {s.name: reads_match(s.condition) for s in stages}
    prog = PatternProgram(
        names=[s.name for s in positive], conds=[compiled[s.name] for s in positive],
        uses_match=[reads[s.name] for s in positive],
        mins=[s.min for s in positive], maxs=[s.max for s in positive],
        within=spec.within, skip=_skip_mode(spec))
    if isinstance(spec.skip, SkipToStage):
        prog.skip_stage = prog.names.index(spec.skip.stage)
    prog.starts = _reachable(stages, -1, compiled, prog.names, first=True)[0]
    for k, stage in enumerate(positive):
        at = stages.index(stage)
        per_class = []
        done = []
        for c in (BELOW, ROOM, FULL):
            conts: list[Cont] = []
            if c != FULL:  # the stage again
                conts.append(Cont(k, _CONTIGUITY[stage.inner or "followed_by"],
                                  reads_match=reads[stage.name]))
            complete = False
            if c != BELOW:
                guard = compiled[stage.name] if stage.greedy and c == ROOM else None
                targets, complete, negs = _reachable(stages, at, compiled, prog.names)
                if complete and stages[-1].negative:  # pending: a match at its expiry unless
                    trailing = stages[-1]  # the trailing stage's events come first
                    conts.append(Cont(END, ANY, (), (compiled[trailing.name],),
                                      reads_match=reads[trailing.name]))
                    complete = False
                for target, (nn, nf) in zip(targets, negs, strict=True):
                    nxt = positive[target]
                    after = nxt.after or "followed_by"
                    between = stages[at + 1:stages.index(nxt)]
                    uses = (reads[nxt.name] or (guard is not None and reads[stage.name])
                            or any(reads[s.name] for s in between if s.negative))
                    conts.append(Cont(target, _CONTIGUITY[after], nn, nf, guard,
                                      guard is not None and stage.inner == "next", uses))
            per_class.append(conts)
            done.append(complete)
        prog.conts.append(per_class)
        prog.complete.append(done)
    if spec.select is not None:
        if spec.select.python is not None:
            prog.select = load_callable(spec.select.python)
        else:
            assert spec.select.fields is not None
            prog.select_fields = {name: compile_expression(src, broadcast, SELECT_ARGS)
                                  for name, src in spec.select.fields.items()}
    return prog


def _cond(stage: StageSpec, broadcast: BroadcastStates | None) -> Cond:
    return compile_expression(stage.condition, broadcast, COND_ARGS)


def _skip_mode(spec: PatternSpec) -> int:
    skip = spec.skip
    if isinstance(skip, SkipToStage):
        return TO_FIRST if skip.to_first is not None else TO_LAST
    return {"no_skip": NO_SKIP, "past_last_event": PAST_LAST, "to_next": TO_NEXT}[skip]


def _reachable(stages: list[StageSpec], at: int, compiled: dict[str, Cond], names: list[str],
               first: bool = False
               ) -> tuple[list[int], bool, list[tuple[tuple[Cond, ...], tuple[Cond, ...]]]]:
    """The positive stages after `stages[at]` reachable past stages with min 0, whether the
    end is reachable (the run is a match), and per target the negative conditions passed."""
    targets: list[int] = []
    negs: list[tuple[tuple[Cond, ...], tuple[Cond, ...]]] = []
    not_next: list[Cond] = []
    not_followed: list[Cond] = []
    for s in stages[at + 1:]:
        if s.negative:
            if not first:  # before a match's first event nothing is forbidden
                (not_next if s.kind == "not_next" else not_followed).append(compiled[s.name])
            continue
        targets.append(names.index(s.name))
        negs.append((tuple(not_next), tuple(not_followed)))
        if s.min > 0:
            return targets, False, negs
    return targets, True, negs
