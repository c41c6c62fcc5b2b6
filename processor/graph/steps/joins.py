"""Factories of the joins: stream-table lookups, and interval joins / reconciliations of streams.

A stream-table join reads a table the task (or the worker, for a global table) holds, so it is
a plain step in the stream's sub-topology. Joins of streams need every record of a key from
every input in one task: each input ends with a write to one internal topic keyed by the join
key, tagged with its side, and a new sub-topology runs the join over it. Repartitioning always
(as Flink does) makes any partition counts work and reuses the exactly-once de-duplication and
the watermarks of repartition topics; the cost is one produce/consume hop per record.
"""

from __future__ import annotations

from typing import Any

from processor.graph.model import BuildContext, StepNode, TableDef, TopicEnd
from processor.graph.scope import Scope, StepAt, StepKind, Stream, append_node, auto_name
from processor.operators import KeyBy
from processor.operators.base import Operator
from processor.operators.interval_state import STATE_FORMAT as INTERVAL_STATE_FORMAT
from processor.operators.reconcile_state import STATE_FORMAT as RECONCILE_STATE_FORMAT
from processor.serde import serde_for, state_key_serde
from processor.spec.loader import PathT, format_path
from processor.spec.steps import IntervalJoinStep, JoinStep, ReconcileStep


def table_join_step(scope: Scope, at: StepAt, streams: list[Stream]) -> list[Stream] | None:
    """A lookup in a table: a per-task table needs the stream keyed and partitioned as the
    table's topic (repartitioned to its partition count if the key changed or streams merge)."""
    path, step = at.path, at.step
    table = _join_table(scope, path, step)
    if table is None:
        return streams
    if table.kind == "table":
        one = scope.one_task_per_key(path, streams, auto_name("join", path), scope.policy(step),
                                     partitions_like=table.topic)
        if one is None:
            return None
        streams = one
    node = _table_join_node(scope, path, step, table)
    if node is None:
        return streams
    append_node(streams, node, scope.policy(step))
    if table.kind == "table":
        for stream in streams:
            _copartition(scope, path, stream.sub.source, table)
    return streams


def _join_table(scope: Scope, path: PathT, step: JoinStep) -> TableDef | None:
    spec = step.join
    src = scope.spec.sources.get(spec.table)
    tables = [n for n, s in scope.spec.sources.items() if s.kind in ("table", "global_table")]
    if src is None or src.kind not in ("table", "global_table"):
        what = "unknown source" if src is None else f"source {spec.table!r} is a {src.kind}, not"
        scope.error((*path, "join", "table"),
                    f"{what} {spec.table!r} " if src is None else f"{what} a table; "
                    + f"(tables: {', '.join(tables) or 'none declared'}; declare one with "
                    "`kind: table` or `kind: global_table`)")
        return None
    if src.kind == "table" and spec.key is not None:
        scope.error((*path, "join", "key"),
                    f"table {spec.table!r} is partitioned: each task holds only the keys of its "
                    "own partition, so it can be looked up by the record key only. Key the "
                    "stream by this expression first (key_by before the join repartitions it to "
                    "match the table) or declare the table `kind: global_table`")
        return None
    return scope.table_def(spec.table)


def _copartition(scope: Scope, path: PathT, stream: TopicEnd, table: TableDef) -> None:
    """A per-task table join needs partition p of the stream next to partition p of the
    table: equal partition counts (checked here when declared, at worker start always)."""
    where = (f"{scope.loaded.file}:{scope.loaded.lines.line_of(path)}: {format_path(path)}: join of "
             f"{'repartition topic' if stream.internal else 'topic'} {stream.topic!r} with "
             f"table {table.name!r} (topic {table.topic!r})")
    scope.copartitioned.append((stream.topic, table.topic, where))
    mine, theirs = _declared_partitions(scope, stream), scope.spec.sources[table.name].partitions
    if mine is not None and theirs is not None and mine != theirs:
        scope.error(path, f"join with table {table.name!r} needs co-partitioned topics: "
                    f"{stream.topic!r} has {mine} partitions, table topic {table.topic!r} has "
                    f"{theirs}. Repartition explicitly (a key_by before the join writes the "
                    f"stream to a topic with {theirs} partitions) or declare the table "
                    "`kind: global_table`")


def _declared_partitions(scope: Scope, end: TopicEnd) -> int | None:
    """A topic's partition count as far as the spec tells (`partitions:` on sources)."""
    if end.partitions_like is not None:
        return next((s.partitions for s in scope.spec.sources.values()
                     if s.topic == end.partitions_like), None)
    if end.internal:
        counts = [_declared_partitions(scope, scope.subs[t].source) for t in end.upstream_topics]
        return None if not counts or None in counts else max(c for c in counts if c)
    return next((s.partitions for s in scope.spec.sources.values()
                 if s.topic == end.topic and s.kind == "stream"), None)


def _table_join_node(scope: Scope, path: PathT, step: JoinStep, table: TableDef) -> StepNode | None:
    spec = step.join
    key_fn = None
    if spec.key is not None:
        key_fn = scope.compile((*path, "join", "key"), spec.key)
        if key_fn is None:
            return None
    field = spec.as_ or spec.table
    name = format_path(path)

    def build(ctx: BuildContext) -> Operator:
        from processor.operators.joins import TableJoin

        assert ctx.table_for is not None, "the runtime supplies the tables"
        kser = (ctx.serde_for(table.end, True) if ctx.serde_for and table.key_serde
                else serde_for(table.key_format))
        vser = (ctx.serde_for(table.end, False) if ctx.serde_for and table.value_serde
                else serde_for(table.value_format))
        return TableJoin(name, ctx.table_for(table), key_fn, kser.encode, vser.decode, spec.type,
                         field)

    label = (f"{spec.type} with {table.kind.replace('_', ' ')} {table.name} "
             f"on {spec.key or 'the record key'} as {field!r}")
    return StepNode(path, "join", label, build, table=table)


def stream_join_step(scope: Scope, at: StepAt, streams: list[Stream]) -> list[Stream] | None:
    """Repartition this pipeline's streams (side 0) and each `with` source (sides 1..n) into
    one topic and append the join to the sub-topology reading it."""
    step = at.step
    if isinstance(step, IntervalJoinStep):
        store = step.interval_join.store or auto_name("join", at.path)
    else:
        store = step.reconcile.store or auto_name("reconcile", at.path)
    joined = _stream_join(scope, at.path, step, streams, at.own, store)
    return None if joined is None else [joined]


def _stream_join(scope: Scope, path: PathT, step: IntervalJoinStep | ReconcileStep,
                 streams: list[Stream], own: str | None, store: str) -> Stream | None:
    if isinstance(step, IntervalJoinStep):
        kind, spec = "interval_join", step.interval_join
        others, keys = [spec.with_], ({spec.with_: spec.key} if spec.key else {})
    else:
        kind, spec = "reconcile", step.reconcile  # type: ignore[assignment]
        others, keys = list(spec.with_), dict(spec.keys)
    spath: PathT = (*path, kind)
    if own is None:
        scope.error(path, f"name this pipeline (`name:`): a {kind} output names its inputs, and this "
                    "pipeline merges several sources")
        return None
    names = [own, *others]
    if len(set(names)) != len(names):
        scope.error((*spath, "with"), f"the inputs of a {kind} need distinct names, got "
                    f"{', '.join(names)}; give this pipeline a `name:`")
        return None
    if kind == "reconcile":
        from processor.operators.joins import RESERVED_SIDE_NAMES

        clash = [n for n in names if n in RESERVED_SIDE_NAMES]
        if clash:
            scope.error((*spath, "with"), f"input name {clash[0]!r} is a field of every reconcile "
                        f"result ({', '.join(sorted(RESERVED_SIDE_NAMES))}); rename the source or "
                        "the pipeline")
            return None
    sides = []
    for n, other in enumerate(others):
        wpath: PathT = (*spath, "with") if kind == "interval_join" else (*spath, "with", n)
        side = scope.stream_source(wpath, other)
        if side is None:
            return None
        if other in keys:
            kpath: PathT = (*spath, "key") if kind == "interval_join" else (*spath, "keys", other)
            fn = scope.compile(kpath, keys[other])
            if fn is None:
                return None
            kname = format_path(kpath)
            node = StepNode(kpath, "key_by", keys[other], lambda ctx, f=fn, n=kname: KeyBy(n, f))
            node.on_error = scope.policy(step)
            side.append(node)
        sides.append(side)
    feeders = [*streams, *sides]
    joined = scope.repartition(path, feeders, store, scope.policy(step),
                               sides=[0] * len(streams) + list(range(1, len(sides) + 1)))
    if joined is None:
        return None
    storedef = scope.claim_store(spath, store, joined.sub.id)
    mismatch = None
    if isinstance(step, ReconcileStep) and step.reconcile.mismatch:
        mismatch = scope.compile((*spath, "mismatch"), step.reconcile.mismatch)
        if mismatch is None:
            return None
    if storedef is None:
        return None
    node = StepNode(path, kind, _label(step, names), _builder(step, format_path(path), store,
                                                                names, mismatch), store=storedef)
    node.on_error = scope.policy(step)
    node.state = _state_facts(step, names)
    joined.append(node)
    return joined


def _state_facts(step: IntervalJoinStep | ReconcileStep, names: list[str]) -> dict[str, Any]:
    """What decides how a join's store is read (graph/layout.py); keys come from its topic."""
    if isinstance(step, IntervalJoinStep):
        s = step.interval_join
        return {"operator": "interval_join", "key_format": "json", "type": s.type,
                "sides": names, "before": s.before, "after": s.after,
                "state_format": INTERVAL_STATE_FORMAT}
    r = step.reconcile
    return {"operator": "reconcile", "key_format": "json", "sides": names, "timeout": r.timeout,
            "mismatch": r.mismatch, "state_format": RECONCILE_STATE_FORMAT}


def _label(step: IntervalJoinStep | ReconcileStep, names: list[str]) -> str:
    if isinstance(step, IntervalJoinStep):
        s = step.interval_join
        return (f"{s.type} {names[0]} with {names[1]} within [-{s.before}ms, +{s.after}ms] "
                "of event time")
    r = step.reconcile
    return (f"{' + '.join(names)} by business id, timeout {r.timeout}ms"
            + (f", mismatch when {r.mismatch}" if r.mismatch else ""))


def _builder(step: IntervalJoinStep | ReconcileStep, name: str, store: str, names: list[str],
             mismatch: Any) -> Any:
    # a join reads a repartition topic: JSON keys, as compact copies (state_key_serde): a key's
    # bytes stay in the state's caches and expiry index, and orjson's would keep 4 KiB each
    keys = state_key_serde("json")

    def build(ctx: BuildContext) -> Operator:
        from processor.operators.joins import IntervalJoin, Reconcile

        if isinstance(step, IntervalJoinStep):
            s = step.interval_join
            return IntervalJoin(name, store, keys.encode, keys.decode, ctx.clock,
                                before_ms=s.before, after_ms=s.after, kind=s.type,
                                names=(names[0], names[1]),
                                cache_max_entries=ctx.cache_max_entries)
        return Reconcile(name, store, keys.encode, keys.decode, ctx.clock, names=list(names),
                         timeout_ms=step.reconcile.timeout, mismatch=mismatch,
                         cache_max_entries=ctx.cache_max_entries)

    return build


KINDS = {
    JoinStep: StepKind(table_join_step),
    IntervalJoinStep: StepKind(stream_join_step),
    ReconcileStep: StepKind(stream_join_step),
}
