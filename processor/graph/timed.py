"""Graph nodes for the event-time steps: `window` + `aggregate`, and `process` functions.

Both read the task's Clock (the watermark before each record) and keep their state in a
changelogged store like a plain aggregate. Construction is tried once at build time so that a
topology that cannot run (e.g. a session window over a Python reducer without `merge`) fails
`processor validate`, not the first task.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from processor.errors import ExpressionError
from processor.graph.nodes import BuildContext, StepNode
from processor.operators import compile_aggregation
from processor.operators.base import Operator
from processor.operators.process import ProcessFunction
from processor.operators.windows import build_window_operator
from processor.serde import serde_for
from processor.spec.loader import PathT, format_path
from processor.spec.models import AggregateStep, ProcessStep, WindowSpec, WindowStep
from processor.timeutil.watermark import Clock

if TYPE_CHECKING:
    from processor.graph.topology import _Builder

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


def window_node(b: _Builder, path: PathT, step: WindowStep, following: AggregateStep,
                key_format: str, sub_id: int) -> StepNode | None:
    wspec, aspec = step.window, following.aggregate
    wpath: PathT = (*path, "window")
    apath: PathT = (*path[:-1], int(path[-1]) + 1, "aggregate")
    ok = True
    if "emit" in aspec.model_fields_set:
        b.error((*apath, "emit"), "a windowed aggregate emits as its window says "
                "(window.emit: final | updates); remove `emit` here")
        ok = False
    if wspec.store and aspec.store and wspec.store != aspec.store:
        b.error((*apath, "store"), f"two store names for one windowed aggregate "
                f"({wspec.store!r} on the window, {aspec.store!r} here); keep one")
        ok = False
    for reserved in RESERVED_FIELDS & set(aspec.fields):
        b.error((*apath, reserved), f"{reserved!r} is part of every window result; "
                "name this field differently")
        ok = False
    name = wspec.store or aspec.store or f"window-{path[1]}-{path[3]}"
    store = b.claim_store(wpath, name, sub_id)
    fields = b.aggregation(apath, aspec.fields)
    late = None if wspec.late == "drop" else b.sink_end((*wpath, "late"), wspec.late)
    if store is None or fields is None or not ok or (wspec.late != "drop" and late is None):
        return None
    agg = compile_aggregation(fields)
    serde = serde_for(key_format)
    step_name = format_path(path)
    try:
        build_window_operator(step_name, name, wspec, agg, serde.encode, serde.decode, Clock())
    except ExpressionError as exc:
        b.error(apath, str(exc))
        return None

    def build(ctx: BuildContext) -> Operator:
        op: Any = build_window_operator(step_name, name, wspec, agg, serde.encode, serde.decode,
                                        ctx.clock, ctx.cache_max_entries)
        op.late_sink = (ctx.late_emitter_for(late, ctx.partition, ctx.source_topic, step_name)
                        if late is not None and ctx.late_emitter_for else None)
        return op

    label = _window_label(wspec) + "; " + ", ".join(
        f"{f.name}={f.func}({f.expr or f.reducer or ''})" for f in fields)
    return StepNode(path, "window", label, build, store=store, late=late)


def process_node(b: _Builder, path: PathT, step: ProcessStep, key_format: str,
                 sub_id: int) -> StepNode | None:
    spec = step.process
    ppath: PathT = (*path, "process")
    store = b.claim_store(ppath, spec.store or f"process-{path[1]}-{path[3]}", sub_id)
    fn = b.callable((*ppath, "python"), spec.python)
    on_timer = b.callable((*ppath, "on_timer"), spec.on_timer) if spec.on_timer else None
    if store is None or fn is None or (spec.on_timer and on_timer is None):
        return None
    serde = serde_for(key_format)
    step_name, store_name = format_path(path), store.name

    def build(ctx: BuildContext) -> Operator:
        return ProcessFunction(step_name, store_name, fn, on_timer, serde.encode, serde.decode,
                               ctx.clock, ctx.cache_max_entries)

    label = spec.python + (f" (timers: {spec.on_timer})" if spec.on_timer else "")
    return StepNode(path, "process", label, build, store=store)
