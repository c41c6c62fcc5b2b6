"""Factory of the `pattern` step: checks what the spec models cannot, then one keyed node.

The models (spec/patterns.py) check each stage and the pattern's shape; here every
expression is compiled and its `match['stage']` references resolved, so `processor validate`
names the file and line of a reference to an unknown stage, to a negative stage (it takes no
events) or to a stage that comes later (its events are not known yet). Like an aggregate,
the step needs all records of a key in one task: a changed key is repartitioned first.
"""

from __future__ import annotations

from processor.errors import ExpressionError
from processor.expressions import parse_expression
from processor.graph.model import BuildContext, StepNode, TopicEnd
from processor.graph.scope import Scope, StepAt, StepKind, Stream, auto_name
from processor.operators.base import Operator
from processor.operators.patterns import build_pattern_operator
from processor.operators.patterns.program import COND_ARGS, SELECT_ARGS, stage_refs
from processor.serde import state_key_serde
from processor.spec.loader import PathT
from processor.spec.patterns import PatternSpec
from processor.spec.steps import PatternStep
from processor.timeutil.watermark import Clock


def pattern_step(scope: Scope, at: StepAt, streams: list[Stream]) -> list[Stream] | None:
    spec = at.step.pattern
    return scope.keyed_node(at, streams, spec.store or auto_name("pattern", at.path),
                            lambda stream: _pattern_node(scope, at, stream))


def _checked(scope: Scope, path: PathT, spec: PatternSpec) -> bool:
    """Compile-check every expression and its stage references; report each problem."""
    ok = True
    positive = [s.name for s in spec.stages if not s.negative]
    negative = {s.name for s in spec.stages if s.negative}
    for i, stage in enumerate(spec.stages):
        where = (*path, "stages", i, stage.kind)
        known = {s.name for s in spec.stages[:i + 1] if not s.negative}
        ok &= _expression(scope, where, stage.condition, COND_ARGS, positive, negative, known,
                          f"stage {stage.name!r}")
    if spec.select is not None and spec.select.fields is not None:
        for name, source in spec.select.fields.items():
            ok &= _expression(scope, (*path, "select", name), source, SELECT_ARGS, positive,
                              negative, set(positive), "select")
    return ok


def _expression(scope: Scope, path: PathT, source: str, args: tuple[str, ...],
                positive: list[str], negative: set[str], known: set[str], what: str) -> bool:
    try:
        parse_expression(source, frozenset(args) - {"key", "value", "timestamp"})
    except ExpressionError as exc:
        scope.error(path, str(exc))
        return False
    for ref in stage_refs(source):
        if ref in known:
            continue
        if ref in negative:
            problem = f"{ref!r} is a negative stage: it takes no events"
        elif ref in positive:
            problem = f"stage {ref!r} comes later: its events are not known when {what} is matched"
        else:
            problem = f"no stage {ref!r} (stages: {', '.join(positive)})"
        scope.error(path, f"match[{ref!r}]: {problem}")
        return False
    return True


def _pattern_node(scope: Scope, at: StepAt, stream: Stream) -> StepNode | None:
    spec: PatternSpec = at.step.pattern
    path = at.path
    ppath: PathT = (*path, "pattern")
    store = scope.claim_store(ppath, spec.store or f"pattern-{path[1]}-{path[3]}", stream.sub.id)
    ok = _checked(scope, ppath, spec)
    if spec.select is not None and spec.select.python is not None:
        ok &= scope.callable((*ppath, "select", "python"), spec.select.python) is not None
    late = None if spec.late == "drop" else scope.sink_end((*ppath, "late"), spec.late)
    timeouts = (None if spec.timeouts == "drop"
                else scope.sink_end((*ppath, "timeouts"), spec.timeouts))
    if (store is None or not ok or (spec.late != "drop" and late is None)
            or (spec.timeouts != "drop" and timeouts is None)):
        return None
    serde = state_key_serde(stream.key_format)
    step_name, store_name, broadcast = at.name, store.name, scope.broadcast
    try:
        build_pattern_operator(step_name, store_name, spec, serde.encode, serde.decode, Clock(),
                               broadcast=broadcast)
    except ExpressionError as exc:
        scope.error(ppath, str(exc))
        return None

    def build(ctx: BuildContext) -> Operator:
        op = build_pattern_operator(step_name, store_name, spec, serde.encode, serde.decode,
                                    ctx.clock, ctx.cache_max_entries, broadcast)
        op.late_sink = (ctx.late_emitter_for(late, ctx.partition, ctx.source_topic, step_name)
                        if late is not None and ctx.late_emitter_for else None)
        op.timeout_sink = ctx.emitter_for(timeouts, ctx.partition) if timeouts else None
        return op

    node = StepNode(path, "pattern", _label(spec, late, timeouts), build, store=store, late=late,
                    side=timeouts)
    node.state = {"operator": "pattern", "key_format": stream.key_format,
                  "stages": [[s.name, s.kind, s.min, s.max, s.greedy, s.after, s.inner]
                             for s in spec.stages],
                  "conditions": {s.name: s.condition for s in spec.stages},
                  "within": spec.within}
    return node


def _label(spec: PatternSpec, late: TopicEnd | None, timeouts: TopicEnd | None) -> str:
    stages = " ".join(
        (f"!{s.name}" if s.negative else s.name + _quantifier(s.min, s.max))
        for s in spec.stages)
    skip = spec.skip if isinstance(spec.skip, str) else (
        f"to_first {spec.skip.to_first}" if spec.skip.to_first else f"to_last {spec.skip.to_last}")
    return (f"{stages} within {spec.within}ms, skip {skip}, timeouts -> "
            f"{timeouts.topic if timeouts else 'drop'}, late -> {'topic' if late else 'drop'}")


def _quantifier(lo: int, hi: int | None) -> str:
    if (lo, hi) == (1, 1):
        return ""
    if hi is None:
        return "+" if lo == 1 else "*" if lo == 0 else f"{{{lo},}}"
    if (lo, hi) == (0, 1):
        return "?"
    return f"{{{lo}}}" if lo == hi else f"{{{lo},{hi}}}"


KINDS = {PatternStep: StepKind(pattern_step)}
