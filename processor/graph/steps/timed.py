"""Factories of the event-time steps: `window` + `aggregate`, and `process` functions.

Both read the task's Clock (the watermark before each record) and keep their state in a
changelogged store like a plain aggregate. Construction is tried once at build time so that a
topology that cannot run (e.g. a session window over a Python reducer without `merge`) fails
`processor validate`, not the first task. Like an aggregate, both need all records of a key
in one task: a merge or a changed key is repartitioned first.
"""

from __future__ import annotations

from typing import Any

from processor.errors import ExpressionError
from processor.graph.layout import aggregate_facts, window_facts
from processor.graph.model import BuildContext, StepNode
from processor.graph.scope import Scope, StepAt, StepKind, Stream, append_node, auto_name
from processor.graph.steps.aggregate import fields_label
from processor.operators import compile_aggregation
from processor.operators.base import Operator
from processor.operators.process import ProcessFunction
from processor.operators.windows import build_window_operator
from processor.serde import state_key_serde
from processor.spec.loader import PathT, format_path
from processor.spec.steps import AggregateStep, ProcessStep, WindowSpec, WindowStep
from processor.timeutil.watermark import Clock

RESERVED_FIELDS = {"window_start", "window_end", "window_index"}


def _window_label(w: WindowSpec) -> str:
    ms = "{}ms".format
    match w.kind:
        case "tumbling":
            shape = f"tumbling {ms(w.tumbling)}"
        case "hopping":
            assert w.hopping is not None
            shape = f"hopping {ms(w.hopping.size)} every {ms(w.hopping.advance)}"
        case "sliding":
            shape = f"sliding {ms(w.sliding)}"
        case "session":
            assert w.session is not None
            shape = f"session gap {ms(w.session.gap)}"
        case _:
            assert w.count is not None
            shape = f"count {w.count.size}" + (f" slide {w.count.slide}" if w.count.slide else "")
    late = "drop" if w.late == "drop" else "topic"
    return f"{shape}, allowed lateness {ms(w.allowed_lateness)}, emit {w.emit}, late -> {late}"


def window_step(scope: Scope, at: StepAt, streams: list[Stream]) -> list[Stream] | None:
    """A window and the aggregate after it (`takes_following`) become one node."""
    wspec, following = at.step.window, at.following
    given = wspec.store or (following.aggregate.store if isinstance(following, AggregateStep)
                            else None)
    one = scope.one_task_per_key(at.path, streams, given or auto_name("window", at.path),
                                 scope.policy(at.step, following))
    if one is None:
        return None
    if not isinstance(following, AggregateStep):
        scope.error((*at.path, "window"), "a window step must be followed by an aggregate step "
                    "(what to compute per window)")
        return one
    node = _window_node(scope, at.path, at.step, following, one[0])
    return one if node is None else append_node(one, node, scope.policy(at.step, following))


def _window_node(scope: Scope, path: PathT, step: WindowStep, following: AggregateStep,
                 stream: Stream) -> StepNode | None:
    wspec, aspec = step.window, following.aggregate
    wpath: PathT = (*path, "window")
    apath: PathT = (*path[:-1], int(path[-1]) + 1, "aggregate")
    ok = True
    if "emit" in aspec.model_fields_set:
        scope.error((*apath, "emit"), "a windowed aggregate emits as its window says "
                    "(window.emit: final | updates); remove `emit` here")
        ok = False
    if wspec.store and aspec.store and wspec.store != aspec.store:
        scope.error((*apath, "store"), f"two store names for one windowed aggregate "
                    f"({wspec.store!r} on the window, {aspec.store!r} here); keep one")
        ok = False
    for reserved in RESERVED_FIELDS & set(aspec.fields):
        scope.error((*apath, reserved), f"{reserved!r} is part of every window result; "
                    "name this field differently")
        ok = False
    name = wspec.store or aspec.store or f"window-{path[1]}-{path[3]}"
    store = scope.claim_store(wpath, name, stream.sub.id)
    fields = scope.aggregation(apath, aspec.fields)
    late = None if wspec.late == "drop" else scope.sink_end((*wpath, "late"), wspec.late)
    if store is None or fields is None or not ok or (wspec.late != "drop" and late is None):
        return None
    agg = compile_aggregation(fields, scope.broadcast)
    serde = state_key_serde(stream.key_format)
    step_name = format_path(path)
    try:
        build_window_operator(step_name, name, wspec, agg, serde.encode, serde.decode, Clock())
    except ExpressionError as exc:
        scope.error(apath, str(exc))
        return None

    def build(ctx: BuildContext) -> Operator:
        op: Any = build_window_operator(step_name, name, wspec, agg, serde.encode, serde.decode,
                                        ctx.clock, ctx.cache_max_entries)
        op.late_sink = (ctx.late_emitter_for(late, ctx.partition, ctx.source_topic, step_name)
                        if late is not None and ctx.late_emitter_for else None)
        return op

    label = _window_label(wspec) + "; " + fields_label(fields)
    node = StepNode(path, "window", label, build, store=store, late=late)
    node.state = {"operator": "window", "key_format": stream.key_format,
                  "window": window_facts(wspec), "allowed_lateness": wspec.allowed_lateness,
                  "emit": wspec.emit, "fields": aggregate_facts(fields)}
    return node


def process_step(scope: Scope, at: StepAt, streams: list[Stream]) -> list[Stream] | None:
    spec = at.step.process
    return scope.keyed_node(at, streams, spec.store or auto_name("process", at.path),
                            lambda stream: _process_node(scope, at, stream))


def _process_node(scope: Scope, at: StepAt, stream: Stream) -> StepNode | None:
    spec, path = at.step.process, at.path
    ppath: PathT = (*path, "process")
    store = scope.claim_store(ppath, spec.store or f"process-{path[1]}-{path[3]}", stream.sub.id)
    fn = scope.callable((*ppath, "python"), spec.python)
    on_timer = scope.callable((*ppath, "on_timer"), spec.on_timer) if spec.on_timer else None
    if store is None or fn is None or (spec.on_timer and on_timer is None):
        return None
    serde = state_key_serde(stream.key_format)
    step_name, store_name, broadcast = at.name, store.name, scope.broadcast

    def build(ctx: BuildContext) -> Operator:
        op = ProcessFunction(step_name, store_name, fn, on_timer, serde.encode, serde.decode,
                             ctx.clock, ctx.cache_max_entries)
        op.ctx.broadcast = broadcast
        return op

    label = spec.python + (f" (timers: {spec.on_timer})" if spec.on_timer else "")
    node = StepNode(path, "process", label, build, store=store)
    node.state = {"operator": "process", "key_format": stream.key_format,
                  "function": spec.python, "on_timer": spec.on_timer}
    return node


KINDS = {
    WindowStep: StepKind(window_step, takes_following=True),
    ProcessStep: StepKind(process_step),
}
