"""Graph nodes for joins: stream-table lookups, and interval joins / reconciliations of streams.

A stream-table join reads a table the task (or the worker, for a global table) holds, so it is
a plain step in the stream's sub-topology. Joins of streams need every record of a key from
every input in one task: each input ends with a write to one internal topic keyed by the join
key, tagged with its side, and a new sub-topology runs the join over it. Repartitioning always
(as Flink does) makes any partition counts work and reuses the exactly-once de-duplication and
the watermarks of repartition topics; the cost is one produce/consume hop per record.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from processor.graph.nodes import BuildContext, StepNode, TableDef
from processor.operators import KeyBy
from processor.operators.base import Operator
from processor.serde import serde_for
from processor.spec.loader import PathT, format_path
from processor.spec.models import IntervalJoinStep, JoinStep, ReconcileStep

if TYPE_CHECKING:
    from processor.graph.topology import _Builder, _Stream


def table_join_node(b: _Builder, path: PathT, step: JoinStep, table: TableDef) -> StepNode | None:
    spec = step.join
    key_fn = None
    if spec.key is not None:
        key_fn = b.compile((*path, "join", "key"), spec.key)
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


def stream_join(b: _Builder, path: PathT, step: IntervalJoinStep | ReconcileStep,
                streams: list[_Stream], own: str | None, store: str) -> _Stream | None:
    """Repartition this pipeline's streams (side 0) and each `with` source (sides 1..n) into
    one topic and append the join to the sub-topology reading it."""
    if isinstance(step, IntervalJoinStep):
        kind, spec = "interval_join", step.interval_join
        others, keys = [spec.with_], ({spec.with_: spec.key} if spec.key else {})
    else:
        kind, spec = "reconcile", step.reconcile  # type: ignore[assignment]
        others, keys = list(spec.with_), dict(spec.keys)
    spath: PathT = (*path, kind)
    if own is None:
        b.error(path, f"name this pipeline (`name:`): a {kind} output names its inputs, and this "
                "pipeline merges several sources")
        return None
    names = [own, *others]
    if len(set(names)) != len(names):
        b.error((*spath, "with"), f"the inputs of a {kind} need distinct names, got "
                f"{', '.join(names)}; give this pipeline a `name:`")
        return None
    if kind == "reconcile":
        from processor.operators.joins import RESERVED_SIDE_NAMES

        clash = [n for n in names if n in RESERVED_SIDE_NAMES]
        if clash:
            b.error((*spath, "with"), f"input name {clash[0]!r} is a field of every reconcile "
                    f"result ({', '.join(sorted(RESERVED_SIDE_NAMES))}); rename the source or "
                    "the pipeline")
            return None
    sides = []
    for n, other in enumerate(others):
        wpath: PathT = (*spath, "with") if kind == "interval_join" else (*spath, "with", n)
        side = b.stream_source(wpath, other)
        if side is None:
            return None
        if other in keys:
            kpath: PathT = (*spath, "key") if kind == "interval_join" else (*spath, "keys", other)
            fn = b.compile(kpath, keys[other])
            if fn is None:
                return None
            kname = format_path(kpath)
            node = StepNode(kpath, "key_by", keys[other], lambda ctx, f=fn, n=kname: KeyBy(n, f))
            node.on_error = b.policy(step)
            side.append(node)
        sides.append(side)
    feeders = [*streams, *sides]
    joined = b.repartition(path, feeders, store, b.policy(step),
                           sides=[0] * len(streams) + list(range(1, len(sides) + 1)))
    if joined is None:
        return None
    storedef = b.claim_store(spath, store, joined.sub.id)
    mismatch = None
    if isinstance(step, ReconcileStep) and step.reconcile.mismatch:
        mismatch = b.compile((*spath, "mismatch"), step.reconcile.mismatch)
        if mismatch is None:
            return None
    if storedef is None:
        return None
    node = StepNode(path, kind, _label(step, names), _builder(step, format_path(path), store,
                                                                names, mismatch), store=storedef)
    node.on_error = b.policy(step)
    joined.append(node)
    return joined


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
    keys = serde_for("json")  # a join reads a repartition topic: JSON keys

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
