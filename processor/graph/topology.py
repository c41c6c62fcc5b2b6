"""Turn a TopologySpec into sub-topologies: the units that run as one task per partition.

Pipelines reading the same source topic share a sub-topology (the batch is decoded once and
fanned out). A key change (`key_by`, `python`) followed by a stateful step ends the
sub-topology with a write to an internal repartition topic keyed by the new key; a new
sub-topology reads it, so all records of one key meet in one task and one store partition.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from processor.errors import ExpressionError, SpecError, SpecErrors
from processor.expressions import compile_expression, compile_tree, load_callable, parse_expression
from processor.graph import timed
from processor.graph.nodes import BuildContext, StepNode, StoreDef, TopicEnd
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
from processor.operators.fusion import fuse
from processor.serde import serde_for
from processor.spec.loader import LoadedSpec, PathT, format_path
from processor.spec.models import (
    AggregateStep,
    FieldsProjection,
    FilterStep,
    FlatMapStep,
    KeyByStep,
    MapStep,
    ProcessStep,
    PythonRef,
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


@dataclass
class SubTopology:
    id: int
    source: TopicEnd
    chains: list[list[StepNode]] = field(default_factory=list)

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

    @property
    def stores(self) -> list[StoreDef]:
        return [s for sub in self.subtopologies for s in sub.stores]

    @property
    def source_topics(self) -> list[str]:
        return [sub.source.topic for sub in self.subtopologies]

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
                lines.append(f"    watermark: minimum over the partitions of {src.upstream_topic}")
            elif src.max_out_of_orderness_ms or src.idle_timeout_ms:
                idle = (f", idle after {src.idle_timeout_ms}ms without records"
                        if src.idle_timeout_ms else "")
                lines.append(f"    watermark: max event time - {src.max_out_of_orderness_ms}ms{idle}")
            for chain in sub.chains:
                for step in chain:
                    lines.append(f"    -> {step.describe()}")
                lines.append("    .")
        stores = self.stores
        lines.append("  State stores:" if stores else "  State stores: none")
        lines.extend(f"    {s.name}: RocksDB per partition, changelog topic {s.changelog_topic} "
                     f"(compacted), sub-topology {s.subtopology}" for s in stores)
        internal = [s.source.topic for s in self.subtopologies if s.source.internal]
        lines.append("  Repartition topics: " + (", ".join(internal) if internal else "none"))
        lines.append(f"  Dead-letter topic: {self.dlq_topic} (records that fail under on_error: dlq)")
        return "\n".join(lines)


class _Builder:
    def __init__(self, loaded: LoadedSpec) -> None:
        self.loaded = loaded
        self.spec = loaded.spec
        self.errors: list[SpecError] = []
        self.subs: dict[str, SubTopology] = {}
        self.store_names: dict[str, PathT] = {}

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
            source = self.spec.sources.get(pipeline.from_)
            if source is None:
                self.error((*ppath, "from"), f"unknown source {pipeline.from_!r} "
                           f"(sources: {', '.join(self.spec.sources)})")
                continue
            spath: PathT = ("sources", pipeline.from_)
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
                self.error((*ppath, "from"), str(exc))
                continue
            self.pipeline(ppath, pipeline.steps, sub)
        if self.errors:
            raise SpecErrors(self.errors)
        return Topology(self.spec.name, sorted(self.subs.values(), key=lambda s: s.id),
                        self.spec.dlq_topic, self.spec.dlq.partitions)

    def pipeline(self, ppath: PathT, steps: list[Any], sub: SubTopology) -> None:
        chain: list[StepNode] = []
        sub.chains.append(chain)
        key_changed = False
        # state stores key by bytes: schema formats (decoded to dicts) are stored as JSON
        key_format = sub.source.key_format if sub.source.key_serde is None else "json"
        skip_next = False
        for j, step in enumerate(steps):
            path: PathT = (*ppath, "steps", j)
            if skip_next:  # the aggregate a window step already consumed
                skip_next = False
                continue
            if isinstance(step, STATEFUL_STEPS) and key_changed:
                store = self.store_name(path, step, steps, j)
                topic = f"{self.spec.name}-{store}-repartition"
                end = TopicEnd(topic, "json", "json", internal=True,
                               upstream_topic=sub.source.topic, on_error=self.spec.on_error)
                repartition = self.sink_node(path, end, "repartition by new key")
                repartition.on_error = self.policy(step, steps[j + 1] if j + 1 < len(steps) else None)
                chain.append(repartition)
                try:
                    sub = self.sub_for(end)
                except ValueError:
                    self.error(path, f"store {store!r}: its repartition topic {topic} is already "
                                     "fed by another pipeline; give this step its own `store:` name")
                    return
                chain = []
                sub.chains.append(chain)
                key_changed, key_format = False, "json"
            if isinstance(step, WindowStep):
                skip_next = True
                node = self.window(path, step, steps[j + 1] if j + 1 < len(steps) else None,
                                   key_format, sub.id)
            else:
                node = self.step(path, step, key_format, sub)
            if node is None:
                continue
            node.on_error = self.policy(step, steps[j + 1] if isinstance(step, WindowStep)
                                        and j + 1 < len(steps) else None)
            chain.append(node)
            if isinstance(step, KeyByStep | PythonStepSpec):
                key_changed = True

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
            return given or f"window-{path[1]}-{path[3]}"
        if isinstance(step, ProcessStep):
            return step.process.store or f"process-{path[1]}-{path[3]}"
        return step.aggregate.store or f"aggregate-{path[1]}-{path[3]}"

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
        store = self.claim_store(apath, spec.store or f"aggregate-{path[1]}-{path[3]}", sub_id)
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
