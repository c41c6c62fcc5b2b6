"""Turn a TopologySpec into sub-topologies: the units that run as one task per partition.

Pipelines reading the same source topic share a sub-topology (the batch is decoded once and
fanned out). A key change (`key_by`, `python`) followed by a stateful step ends the
sub-topology with a write to an internal repartition topic keyed by the new key; a new
sub-topology reads it, so all records of one key meet in one task and one store partition.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from processor.errors import ExpressionError, SpecError, SpecErrors
from processor.expressions import compile_expression, compile_tree, load_callable, parse_expression
from processor.graph import joins, timed
from processor.graph.nodes import BuildContext, StepNode, StoreDef, TableDef, TopicEnd
from processor.operators import (
    Aggregate,
    Filter,
    FlatMap,
    KeyBy,
    MapValue,
    Operator,
    PythonStep,
    Sink,
    compile_aggregation,
    parse_field,
)
from processor.operators.branch import Branch
from processor.operators.fusion import fuse
from processor.serde import serde_for
from processor.spec.loader import LoadedSpec, PathT, format_path
from processor.spec.models import (
    AggregateStep,
    BranchCase,
    BranchStep,
    FieldsProjection,
    FilterStep,
    FlatMapStep,
    IntervalJoinStep,
    JoinStep,
    KeyByStep,
    MapStep,
    ProcessStep,
    PythonRef,
    ReconcileStep,
    SerdeSpec,
    SinkSpec,
    ToStep,
    WindowStep,
)
from processor.spec.models import (
    PythonStep as PythonStepSpec,
)
from processor.state.changelog import changelog_topic

STATEFUL_STEPS = (AggregateStep, WindowStep, ProcessStep)


def auto_name(kind: str, path: PathT) -> str:
    """A default store / topic name from a step's position: `aggregate-0-2` is pipeline 0,
    step 2 (nested steps of a branch add their case and step numbers)."""
    return "-".join([kind, *(str(p) for p in path if isinstance(p, int))])


@dataclass
class SubTopology:
    id: int
    source: TopicEnd
    chains: list[list[StepNode]] = field(default_factory=list)
    # a branch case's chain -> (the chain ending in that branch, case number)
    parents: dict[int, tuple[int, int]] = field(default_factory=dict)

    def new_chain(self, parent: tuple[int, int] | None = None) -> int:
        self.chains.append([])
        if parent is not None:
            self.parents[len(self.chains) - 1] = parent
        return len(self.chains) - 1

    @property
    def tables(self) -> list[TableDef]:
        """Per-task tables its joins read (global tables live on the worker)."""
        found = {s.table for chain in self.chains for s in chain
                 if s.table is not None and s.table.kind == "table"}
        return sorted(found, key=lambda t: t.name)

    @property
    def stores(self) -> list[StoreDef]:
        return [s.store for chain in self.chains for s in chain if s.store]

    @property
    def sinks(self) -> list[TopicEnd]:
        return ([s.sink for chain in self.chains for s in chain if s.sink]
                + [s.late for chain in self.chains for s in chain if s.late])

    def build_chains(self, ctx: BuildContext) -> tuple[list[list[Operator]], dict[str, str]]:
        """The operators of every chain, and each operator's error policy by operator name."""
        chains, policies = [], {}
        for chain in self.chains:
            ops = []
            for step in chain:
                op = step.build(ctx)
                policies[op.name] = step.on_error
                ops.append(op)
            chains.append(fuse(ops))
        return chains, policies


@dataclass
class Topology:
    name: str
    subtopologies: list[SubTopology]
    dlq_topic: str = ""
    dlq_partitions: int = 1
    global_tables: list[TableDef] = field(default_factory=list)
    broadcasts: list[TableDef] = field(default_factory=list)
    # (stream topic, table topic, what joins them): must have equal partition counts
    copartitioned: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def stores(self) -> list[StoreDef]:
        return [s for sub in self.subtopologies for s in sub.stores]

    @property
    def source_topics(self) -> list[str]:
        return [sub.source.topic for sub in self.subtopologies]

    @property
    def input_topics(self) -> list[str]:
        """Every external topic read: streams, tables, global tables, broadcasts."""
        topics = [s.source.topic for s in self.subtopologies if not s.source.internal]
        topics += [t.topic for sub in self.subtopologies for t in sub.tables]
        topics += [t.topic for t in (*self.global_tables, *self.broadcasts)]
        return list(dict.fromkeys(topics))

    @property
    def uses_dlq(self) -> bool:
        """Whether any source or step sends failed records to the dead-letter topic."""
        return any(sub.source.on_error == "dlq" or any(step.on_error == "dlq" for chain in sub.chains
                                                       for step in chain)
                   for sub in self.subtopologies)

    def subtopology_for(self, topic: str) -> SubTopology:
        for sub in self.subtopologies:
            if sub.source.topic == topic:
                return sub
        raise KeyError(topic)

    def describe(self) -> str:
        lines = [f"Topology {self.name} (consumer group {self.name!r})"]
        for sub in self.subtopologies:
            src = sub.source
            kind = "internal repartition topic" if src.internal else "topic"
            lines.append(f"  Sub-topology {sub.id}: reads {kind} {src.topic} "
                         f"(key {src.key_format}, value {src.value_format}"
                         + (f", event time from value field {src.timestamp_field!r}"
                            if src.timestamp_field else "") + f", on_error {src.on_error})")
            if src.internal:
                lines.append("    watermark: minimum over the partitions of "
                             + ", ".join(dict.fromkeys(src.upstream_topics)))
            elif src.max_out_of_orderness_ms or src.idle_timeout_ms:
                idle = (f", idle after {src.idle_timeout_ms}ms without records"
                        if src.idle_timeout_ms else "")
                lines.append(f"    watermark: max event time - {src.max_out_of_orderness_ms}ms{idle}")
            for ci, chain in enumerate(sub.chains):
                if ci in sub.parents:
                    parent, case = sub.parents[ci]
                    lines.append(f"    case {case} of the branch ending chain {parent}:")
                for step in chain:
                    lines.append(f"    -> {step.describe()}")
                lines.append("    .")
        stores = self.stores
        lines.append("  State stores:" if stores else "  State stores: none")
        lines.extend(f"    {s.name}: RocksDB per partition, changelog topic {s.changelog_topic} "
                     f"(compacted), sub-topology {s.subtopology}" for s in stores)
        for t in [*{t for sub in self.subtopologies for t in sub.tables}, *self.global_tables,
                  *self.broadcasts]:
            where = {"table": "RocksDB per task, partition p next to stream partition p",
                     "global_table": "RocksDB on every worker, all partitions",
                     "broadcast": "in memory on every worker, all partitions"}[t.kind]
            lines.append(f"  {t.kind.replace('_', ' ').capitalize()} {t.name}: topic {t.topic} "
                         f"({where}; the topic is its log, no changelog)")
        internal = [s.source.topic for s in self.subtopologies if s.source.internal]
        lines.append("  Repartition topics: " + (", ".join(internal) if internal else "none"))
        lines.append(f"  Dead-letter topic: {self.dlq_topic} (records that fail under on_error: dlq)")
        return "\n".join(lines)


@dataclass
class _Stream:
    """Where a pipeline's records are while it is built: chain `chain` of sub-topology `sub`."""

    sub: SubTopology
    chain: int
    key_changed: bool = False
    key_format: str = "string"

    def append(self, node: StepNode) -> None:
        self.sub.chains[self.chain].append(node)


class _Builder:
    def __init__(self, loaded: LoadedSpec) -> None:
        self.loaded = loaded
        self.spec = loaded.spec
        self.errors: list[SpecError] = []
        self.subs: dict[str, SubTopology] = {}
        self.store_names: dict[str, PathT] = {}
        self.copartitioned: list[tuple[str, str, str]] = []

    def error(self, path: PathT, message: str) -> None:
        self.errors.append(self.loaded.error(path, message))

    def sub_for(self, end: TopicEnd) -> SubTopology:
        sub = self.subs.get(end.topic)
        if sub is None:
            sub = self.subs[end.topic] = SubTopology(len(self.subs), end)
        elif sub.source != end:
            raise ValueError(f"topic {end.topic!r} is read by two sources with different settings")
        return sub

    def compile(self, path: PathT, source: str) -> Callable[..., Any] | None:
        try:
            return compile_expression(source)
        except ExpressionError as exc:
            self.error(path, f"invalid expression {source!r}: {exc}")
            return None

    def callable(self, path: PathT, ref: str) -> Callable[..., Any] | None:
        try:
            return load_callable(ref)
        except ExpressionError as exc:
            self.error(path, str(exc))
            return None

    def record_fn(self, path: PathT, spec: str | PythonRef) -> Callable[..., Any] | None:
        """An expression, or a python function fn(key, value) adapted to (key, value, ts)."""
        if isinstance(spec, str):
            return self.compile(path, spec)
        fn = self.callable((*path, "python"), spec.python)
        if fn is None:
            return None
        return lambda k, v, t: fn(k, v)

    def projection(self, path: PathT, proj: FieldsProjection) -> Callable[..., Any] | None:
        import ast

        keys, values = [], []
        for name, source in proj.fields.items():
            try:
                values.append(parse_expression(source).body)
                keys.append(ast.Constant(name))
            except ExpressionError as exc:
                self.error((*path, "fields", name), f"invalid expression {source!r}: {exc}")
        if len(values) != len(proj.fields):
            return None
        return compile_tree(ast.Dict(keys=keys, values=values), repr(dict(proj.fields)))

    def sink_end(self, path: PathT, to: str | SinkSpec) -> TopicEnd | None:
        if isinstance(to, str):
            sink = self.spec.sinks.get(to)
            if sink is None:
                known = ", ".join(self.spec.sinks) or "none declared"
                self.error(path, f"unknown sink {to!r} (sinks: {known}); "
                                 "or write the topic inline: to: {topic: name}")
                return None
            to = sink
        return TopicEnd(to.topic, to.key.format, to.value.format, partitions=to.partitions,
                        key_serde=self.serde((*path, "key"), to.key, to.topic, sink=True),
                        value_serde=self.serde((*path, "value"), to.value, to.topic, sink=True))

    def serde(self, path: PathT, spec: SerdeSpec, topic: str, *, sink: bool = False) -> SerdeSpec | None:
        """The serde spec with schema files resolved next to the topology file and checked
        now (validate time), or None for the schema-less formats (inlined on the hot path)."""
        if spec.format in ("string", "bytes") or (spec.format == "json" and spec.schema_file is None):
            return None
        if sink and spec.format == "avro_registry" and spec.schema_file is None:
            self.error(path, "an avro_registry sink needs `schema: <file.avsc>` to register and write with")
            return None
        from processor.serde import SchemaError, load_avro_schema, load_json_schema

        base = Path(self.loaded.file).resolve().parent
        resolved: dict[str, str] = {}
        for field_name, alias in (("schema_file", "schema"), ("reader_schema", "reader_schema")):
            given = getattr(spec, field_name)
            if given is None:
                continue
            file = (base / given).resolve()
            try:
                (load_json_schema if spec.format == "json" else load_avro_schema)(str(file))
            except SchemaError as exc:
                self.error((*path, alias), str(exc))
                return None
            resolved[field_name] = str(file)
        return spec.model_copy(update=resolved)

    def build(self) -> Topology:
        for i, pipeline in enumerate(self.spec.pipelines):
            ppath: PathT = ("pipelines", i)
            fpath: PathT = (*ppath, "from")
            names = pipeline.sources
            streams = [self.stream_source(fpath if isinstance(pipeline.from_, str) else (*fpath, n), name)
                       for n, name in enumerate(names)]
            if all(streams):
                own = pipeline.name or (names[0] if len(names) == 1 else None)
                self.steps((*ppath, "steps"), pipeline.steps, streams, own)  # type: ignore[arg-type]
        tables = [self.table_def(name) for name, src in self.spec.sources.items()
                  if src.kind in ("global_table", "broadcast")]
        if self.errors:
            raise SpecErrors(self.errors)
        return Topology(self.spec.name, sorted(self.subs.values(), key=lambda s: s.id),
                        self.spec.dlq_topic, self.spec.dlq.partitions,
                        global_tables=[t for t in tables if t.kind == "global_table"],
                        broadcasts=[t for t in tables if t.kind == "broadcast"],
                        copartitioned=self.copartitioned)

    def stream_source(self, path: PathT, name: str) -> _Stream | None:
        """A new chain reading source `name` (a stream) in its topic's sub-topology."""
        source = self.spec.sources.get(name)
        if source is None:
            self.error(path, f"unknown source {name!r} (sources: {', '.join(self.spec.sources)})")
            return None
        if source.kind != "stream":
            self.error(path, f"source {name!r} is a {source.kind.replace('_', ' ')}: "
                       + ("join it (`join: {table: " + name + "}`)" if source.kind != "broadcast"
                          else f"expressions read it as broadcast[{name!r}]")
                       + "; to process its records as a stream, declare a stream source for "
                       f"topic {source.topic!r}")
            return None
        spath: PathT = ("sources", name)
        end = TopicEnd(source.topic, source.key.format, source.value.format,
                       source.timestamp.field if source.timestamp else None,
                       source.timestamp.unit if source.timestamp else "ms",
                       max_out_of_orderness_ms=source.watermark.max_out_of_orderness,
                       idle_timeout_ms=source.watermark.idle_timeout,
                       on_error=source.on_error or self.spec.on_error,
                       key_serde=self.serde((*spath, "key"), source.key, source.topic),
                       value_serde=self.serde((*spath, "value"), source.value, source.topic))
        try:
            sub = self.sub_for(end)
        except ValueError as exc:
            self.error(path, str(exc))
            return None
        # state stores key by bytes: schema formats (decoded to dicts) are stored as JSON
        key_format = end.key_format if end.key_serde is None else "json"
        return _Stream(sub, sub.new_chain(), False, key_format)

    def steps(self, base: PathT, steps: list[Any], streams: list[_Stream], own: str | None) -> None:
        """Append `steps` to every stream (several until a merge meets a step that needs one
        task per key); `own` names these records in join outputs."""
        skip_next = False
        for j, step in enumerate(steps):
            path: PathT = (*base, j)
            following = steps[j + 1] if j + 1 < len(steps) else None
            if skip_next:  # the aggregate a window step already consumed
                skip_next = False
                continue
            if isinstance(step, BranchStep):
                if following is not None:
                    self.error((*base, j + 1), "a branch ends its pipeline: move the steps after "
                               "it into its cases")
                self.branch(path, step, streams, own)
                return
            if isinstance(step, IntervalJoinStep | ReconcileStep):
                joined = joins.stream_join(self, path, step, streams, own,
                                           self.store_name(path, step, steps, j))
                if joined is None:
                    return
                streams = [joined]
                continue
            if isinstance(step, JoinStep):
                table = self.join_table(path, step)
                if table is None:
                    continue
                if table.kind == "table" and (len(streams) > 1 or streams[0].key_changed):
                    one = self.repartition(path, streams, auto_name("join", path),
                                           self.policy(step), partitions_like=table.topic)
                    if one is None:
                        return
                    streams = [one]
                node = joins.table_join_node(self, path, step, table)
                if node is None:
                    continue
                node.on_error = self.policy(step)
                for stream in streams:
                    stream.append(node)
                    if table.kind == "table":
                        self.copartition(path, stream.sub.source, table)
                continue
            if isinstance(step, STATEFUL_STEPS) and (len(streams) > 1 or streams[0].key_changed):
                store = self.store_name(path, step, steps, j)
                one = self.repartition(path, streams, store, self.policy(step, following))
                if one is None:
                    return
                streams = [one]
            # built once (errors reported once); several streams only share stateless steps
            first = streams[0]
            if isinstance(step, WindowStep):
                skip_next = True
                node = self.window(path, step, following, first.key_format, first.sub.id)
            else:
                node = self.step(path, step, first.key_format, first.sub)
            if node is None:
                continue
            node.on_error = self.policy(step, following if isinstance(step, WindowStep) else None)
            for stream in streams:
                stream.append(node)
                if isinstance(step, KeyByStep | PythonStepSpec):
                    stream.key_changed = True

    def repartition(self, path: PathT, streams: list[_Stream], label: str, policy: str, *,
                    sides: list[int | None] | None = None,
                    partitions_like: str | None = None) -> _Stream | None:
        """End every stream with a write to one internal topic keyed by the current key, and
        start a sub-topology reading it: all records of a key (from every stream) meet in one
        task. Feeder i reports its partitions' watermarks and offsets as slots of its own."""
        topic = f"{self.spec.name}-{label}-repartition"
        reader = TopicEnd(topic, "json", "json", internal=True,
                          upstream_topics=tuple(s.sub.source.topic for s in streams),
                          on_error=self.spec.on_error, partitions_like=partitions_like)
        what = "repartition by new key" if sides is None else "join input"
        for i, stream in enumerate(streams):
            side = None if sides is None else sides[i]
            node = self.sink_node(path, dataclasses.replace(reader, feeder=i, side=side),
                                  what if side is None else f"{what} {side}")
            node.on_error = policy
            stream.append(node)
        try:
            sub = self.sub_for(reader)
        except ValueError:
            self.error(path, f"store {label!r}: its repartition topic {topic} is already fed by "
                             "another pipeline; give this step its own `store:` name")
            return None
        return _Stream(sub, sub.new_chain(), False, "json")

    def branch(self, path: PathT, step: BranchStep, streams: list[_Stream], own: str | None) -> None:
        """A branch node ends each stream's chain; every case continues in child chains."""
        preds: list[Callable[..., Any] | None] = []
        for c, case in enumerate(step.branch):
            if isinstance(case, BranchCase):
                preds.append(self.compile((*path, "branch", c, "when"), case.when))
            else:
                preds.append(None)
        if any(p is None for p, case in zip(preds, step.branch, strict=True)
               if isinstance(case, BranchCase)):
            return
        name = format_path(path)
        label = " | ".join(case.when if isinstance(case, BranchCase) else "default"
                           for case in step.branch)
        node = StepNode(path, "branch", label, lambda ctx: Branch(name, preds))
        node.on_error = self.policy(step)
        for stream in streams:
            stream.append(node)
        for c, case in enumerate(step.branch):
            children = [_Stream(s.sub, s.sub.new_chain((s.chain, c)), s.key_changed, s.key_format)
                        for s in streams]
            if isinstance(case, BranchCase):
                self.steps((*path, "branch", c, "steps"), case.steps, children, own)
            else:
                self.steps((*path, "branch", c, "default"), case.default, children, own)

    def table_def(self, name: str) -> TableDef:
        src = self.spec.sources[name]
        spath: PathT = ("sources", name)
        return TableDef(name, src.topic, src.kind, src.key.format, src.value.format,
                        self.serde((*spath, "key"), src.key, src.topic),
                        self.serde((*spath, "value"), src.value, src.topic))

    def join_table(self, path: PathT, step: JoinStep) -> TableDef | None:
        spec = step.join
        src = self.spec.sources.get(spec.table)
        tables = [n for n, s in self.spec.sources.items() if s.kind in ("table", "global_table")]
        if src is None or src.kind not in ("table", "global_table"):
            what = "unknown source" if src is None else f"source {spec.table!r} is a {src.kind}, not"
            self.error((*path, "join", "table"),
                       f"{what} {spec.table!r} " if src is None else f"{what} a table; "
                       + f"(tables: {', '.join(tables) or 'none declared'}; declare one with "
                       "`kind: table` or `kind: global_table`)")
            return None
        if src.kind == "table" and spec.key is not None:
            self.error((*path, "join", "key"),
                       f"table {spec.table!r} is partitioned: each task holds only the keys of its "
                       "own partition, so it can be looked up by the record key only. Key the "
                       "stream by this expression first (key_by before the join repartitions it to "
                       "match the table) or declare the table `kind: global_table`")
            return None
        return self.table_def(spec.table)

    def copartition(self, path: PathT, stream: TopicEnd, table: TableDef) -> None:
        """A per-task table join needs partition p of the stream next to partition p of the
        table: equal partition counts (checked here when declared, at worker start always)."""
        where = (f"{self.loaded.file}:{self.loaded.lines.line_of(path)}: {format_path(path)}: join of "
                 f"{'repartition topic' if stream.internal else 'topic'} {stream.topic!r} with "
                 f"table {table.name!r} (topic {table.topic!r})")
        self.copartitioned.append((stream.topic, table.topic, where))
        mine, theirs = self.declared_partitions(stream), self.spec.sources[table.name].partitions
        if mine is not None and theirs is not None and mine != theirs:
            self.error(path, f"join with table {table.name!r} needs co-partitioned topics: "
                       f"{stream.topic!r} has {mine} partitions, table topic {table.topic!r} has "
                       f"{theirs}. Repartition explicitly (a key_by before the join writes the "
                       f"stream to a topic with {theirs} partitions) or declare the table "
                       "`kind: global_table`")

    def declared_partitions(self, end: TopicEnd) -> int | None:
        """A topic's partition count as far as the spec tells (`partitions:` on sources)."""
        if end.partitions_like is not None:
            return next((s.partitions for s in self.spec.sources.values()
                         if s.topic == end.partitions_like), None)
        if end.internal:
            counts = [self.declared_partitions(self.subs[t].source) for t in end.upstream_topics]
            return None if not counts or None in counts else max(c for c in counts if c)
        return next((s.partitions for s in self.spec.sources.values()
                     if s.topic == end.topic and s.kind == "stream"), None)

    def policy(self, step: Any, following: Any = None) -> str:
        """A step's on_error; a window's is its aggregate's (where the expressions are)."""
        for candidate in (following, step):
            if isinstance(candidate, AggregateStep | WindowStep) and candidate.on_error:
                return candidate.on_error
        return step.on_error or self.spec.on_error

    def store_name(self, path: PathT, step: Any, steps: list[Any], j: int) -> str:
        """A stateful step's store: its `store:` setting or a name from its position."""
        if isinstance(step, WindowStep):
            nxt = steps[j + 1] if j + 1 < len(steps) else None
            given = step.window.store or (nxt.aggregate.store if isinstance(nxt, AggregateStep)
                                          else None)
            return given or auto_name("window", path)
        if isinstance(step, ProcessStep):
            return step.process.store or auto_name("process", path)
        if isinstance(step, IntervalJoinStep):
            return step.interval_join.store or auto_name("join", path)
        if isinstance(step, ReconcileStep):
            return step.reconcile.store or auto_name("reconcile", path)
        return step.aggregate.store or auto_name("aggregate", path)

    def sink_node(self, path: PathT, end: TopicEnd, label: str) -> StepNode:
        name = f"{format_path(path)} to"

        def build(ctx: BuildContext, end: TopicEnd = end) -> Operator:
            return Sink(name, end.topic, ctx.emitter_for(end, ctx.partition))

        return StepNode(path, "to", f"{end.topic} ({label})", build, sink=end)

    def step(self, path: PathT, step: Any, key_format: str, sub: SubTopology) -> StepNode | None:
        name = format_path(path)
        if isinstance(step, FilterStep):
            fn = self.compile((*path, "filter"), step.filter)
            return fn and StepNode(path, "filter", step.filter, lambda ctx: Filter(name, fn))
        if isinstance(step, MapStep):
            spec = step.map
            if isinstance(spec, FieldsProjection):
                fn = self.projection((*path, "map"), spec)
                label = "fields " + ", ".join(spec.fields)
            else:
                fn = self.record_fn((*path, "map"), spec)
                label = spec if isinstance(spec, str) else spec.python
            return fn and StepNode(path, "map", label, lambda ctx: MapValue(name, fn))
        if isinstance(step, FlatMapStep):
            fn = self.record_fn((*path, "flat_map"), step.flat_map)
            label = step.flat_map if isinstance(step.flat_map, str) else step.flat_map.python
            return fn and StepNode(path, "flat_map", label, lambda ctx: FlatMap(name, fn))
        if isinstance(step, KeyByStep):
            fn = self.record_fn((*path, "key_by"), step.key_by)
            label = step.key_by if isinstance(step.key_by, str) else step.key_by.python
            return fn and StepNode(path, "key_by", label, lambda ctx: KeyBy(name, fn))
        if isinstance(step, PythonStepSpec):
            fn = self.callable((*path, "python"), step.python)
            return fn and StepNode(path, "python", step.python, lambda ctx: PythonStep(name, fn))
        if isinstance(step, ToStep):
            end = self.sink_end((*path, "to"), step.to)
            return end and self.sink_node(path, end, "sink")
        if isinstance(step, AggregateStep):
            return self.aggregate(path, step, key_format, sub.id)
        if isinstance(step, ProcessStep):
            return timed.process_node(self, path, step, key_format, sub.id)
        raise AssertionError(type(step))

    def window(self, path: PathT, step: WindowStep, following: Any, key_format: str,
               sub_id: int) -> StepNode | None:
        if not isinstance(following, AggregateStep):
            self.error((*path, "window"), "a window step must be followed by an aggregate step "
                       "(what to compute per window)")
            return None
        return timed.window_node(self, path, step, following, key_format, sub_id)

    def claim_store(self, path: PathT, store_name: str, sub_id: int) -> StoreDef | None:
        """Register a store name (unique per topology) and its changelog."""
        if store_name in self.store_names:
            self.error((*path, "store"), f"store name {store_name!r} is used twice")
            return None
        self.store_names[store_name] = path
        return StoreDef(store_name, changelog_topic(self.spec.name, store_name), sub_id)

    def aggregation(self, apath: PathT, fields_spec: dict[str, Any]) -> list[Any] | None:
        """Parse every aggregate field, reporting each bad one at its own line."""
        fields = []
        for fname, fspec in fields_spec.items():
            try:
                fields.append(parse_field(fname, fspec))
            except ExpressionError as exc:
                self.error((*apath, fname), str(exc))
        return fields if len(fields) == len(fields_spec) else None

    def aggregate(self, path: PathT, step: AggregateStep, key_format: str,
                  sub_id: int) -> StepNode | None:
        spec = step.aggregate
        apath = (*path, "aggregate")
        store = self.claim_store(apath, spec.store or auto_name("aggregate", path), sub_id)
        fields = self.aggregation(apath, spec.fields)
        if store is None or fields is None:
            return None
        store_name = store.name
        agg = compile_aggregation(fields)
        encode = serde_for(key_format).encode
        name = format_path(path)

        def build(ctx: BuildContext) -> Operator:
            return Aggregate(name, store_name, agg, encode, spec.emit, ctx.cache_max_entries)

        label = ", ".join(f"{f.name}={f.func}({f.expr or f.reducer or ''})" for f in fields)
        return StepNode(path, "aggregate", label, build, store=store)


def build_topology(loaded: LoadedSpec) -> Topology:
    """Compile every expression, resolve references and split into sub-topologies."""
    return _Builder(loaded).build()
