"""The public face of the topology build that step factories (graph/steps/) work through.

A factory turns one spec step into step nodes on the streams it is handed. What it needs from
the build goes through a Scope: compile an expression or import a function at a spec path,
claim a store, resolve schema files, read a source, end streams with a repartition topic, and
report an error at the `file:line: field.path` of the YAML it came from. The walk over the
pipelines (graph/builder.py) owns the Scope and gives it the callback that places nested steps.
"""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from processor.errors import ExpressionError, SpecError
from processor.expressions import (
    BroadcastStates,
    compile_expression,
    compile_tree,
    load_callable,
    parse_expression,
)
from processor.graph.model import BuildContext, StepNode, StoreDef, SubTopology, TableDef, TopicEnd
from processor.operators import Operator, Sink, parse_field
from processor.spec.loader import LoadedSpec, PathT, format_path
from processor.spec.models import TopologySpec
from processor.spec.steps import AggregateStep, FieldsProjection, PythonRef, WindowStep
from processor.spec.topics import SerdeSpec, SinkSpec
from processor.state.changelog import changelog_topic


def auto_name(kind: str, path: PathT) -> str:
    """A default store / topic name from a step's position: `aggregate-0-2` is pipeline 0,
    step 2 (nested steps of a branch add their case and step numbers)."""
    return "-".join([kind, *(str(p) for p in path if isinstance(p, int))])


@dataclass
class Stream:
    """Where a pipeline's records are while it is built: chain `chain` of sub-topology `sub`."""

    sub: SubTopology
    chain: int
    key_changed: bool = False
    key_format: str = "string"

    def append(self, node: StepNode) -> None:
        self.sub.chains[self.chain].append(node)


def append_node(streams: list[Stream], node: StepNode, on_error: str) -> list[Stream]:
    """Append one node to every stream: a step is built once (its errors reported once), and
    several streams (a merge) share it until a step needs one task per key."""
    node.on_error = on_error
    for stream in streams:
        stream.append(node)
    return streams


@dataclass(frozen=True)
class StepAt:
    """A spec step and where it stands in its pipeline."""

    path: PathT
    step: Any
    following: Any  # the next step of the same list, or None
    own: str | None  # what join outputs call this pipeline's records

    @property
    def name(self) -> str:
        """The operator name: the step's spec path (`pipelines[0].steps[2]`)."""
        return format_path(self.path)


Walk = Callable[[PathT, list[Any], list[Stream], str | None], None]
Factory = Callable[["Scope", StepAt, list[Stream]], list[Stream] | None]
"""Places a step on the streams and returns those the pipeline continues on (the same ones when
the step was left out after an error), or None when the pipeline ends here."""


@dataclass(frozen=True)
class StepKind:
    place: Factory
    takes_following: bool = False  # a window is built together with the aggregate after it


class Scope:
    """Topology-wide state of one build (sub-topologies by source topic, claimed store names,
    errors) and the operations step factories share."""

    def __init__(self, loaded: LoadedSpec, walk: Walk) -> None:
        self.loaded = loaded
        self.spec: TopologySpec = loaded.spec
        self.walk = walk  # places a list of nested steps (a branch case) on streams
        self.errors: list[SpecError] = []
        self.subs: dict[str, SubTopology] = {}
        self.store_names: dict[str, PathT] = {}
        self.copartitioned: list[tuple[str, str, str]] = []
        self.broadcast = BroadcastStates()  # the topology's: every expression compiled here reads it

    # -- errors and code ---------------------------------------------------------------------

    def error(self, path: PathT, message: str) -> None:
        self.errors.append(self.loaded.error(path, message))

    def compile(self, path: PathT, source: str) -> Callable[..., Any] | None:
        try:
            return compile_expression(source, self.broadcast)
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
        keys, values = [], []
        for name, source in proj.fields.items():
            try:
                values.append(parse_expression(source).body)
                keys.append(ast.Constant(name))
            except ExpressionError as exc:
                self.error((*path, "fields", name), f"invalid expression {source!r}: {exc}")
        if len(values) != len(proj.fields):
            return None
        return compile_tree(ast.Dict(keys=keys, values=values), repr(dict(proj.fields)),
                            self.broadcast)

    def aggregation(self, apath: PathT, fields_spec: dict[str, Any]) -> list[Any] | None:
        """Parse every aggregate field, reporting each bad one at its own line."""
        fields = []
        for fname, fspec in fields_spec.items():
            try:
                fields.append(parse_field(fname, fspec))
            except ExpressionError as exc:
                self.error((*apath, fname), str(exc))
        return fields if len(fields) == len(fields_spec) else None

    def policy(self, step: Any, following: Any = None) -> str:
        """A step's on_error; a window's is its aggregate's (where the expressions are)."""
        for candidate in (following, step):
            if isinstance(candidate, AggregateStep | WindowStep) and candidate.on_error:
                return candidate.on_error
        return step.on_error or self.spec.on_error

    def claim_store(self, path: PathT, store_name: str, sub_id: int) -> StoreDef | None:
        """Register a store name (unique per topology) and its changelog."""
        if store_name in self.store_names:
            self.error((*path, "store"), f"store name {store_name!r} is used twice")
            return None
        self.store_names[store_name] = path
        return StoreDef(store_name, changelog_topic(self.spec.name, store_name), sub_id)

    # -- topics and schemas ------------------------------------------------------------------

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

    def sink_node(self, path: PathT, end: TopicEnd, label: str) -> StepNode:
        name = f"{format_path(path)} to"

        def build(ctx: BuildContext, end: TopicEnd = end) -> Operator:
            return Sink(name, end.topic, ctx.emitter_for(end, ctx.partition))

        return StepNode(path, "to", f"{end.topic} ({label})", build, sink=end)

    def table_def(self, name: str) -> TableDef:
        src = self.spec.sources[name]
        spath: PathT = ("sources", name)
        return TableDef(name, src.topic, src.kind, src.key.format, src.value.format,
                        self.serde((*spath, "key"), src.key, src.topic),
                        self.serde((*spath, "value"), src.value, src.topic))

    # -- streams -----------------------------------------------------------------------------

    def sub_for(self, end: TopicEnd) -> SubTopology:
        sub = self.subs.get(end.topic)
        if sub is None:
            sub = self.subs[end.topic] = SubTopology(len(self.subs), end)
        elif sub.source != end:
            raise ValueError(f"topic {end.topic!r} is read by two sources with different settings")
        return sub

    def stream_source(self, path: PathT, name: str) -> Stream | None:
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
        return Stream(sub, sub.new_chain(), False, key_format)

    def repartition(self, path: PathT, streams: list[Stream], label: str, policy: str, *,
                    sides: list[int | None] | None = None,
                    partitions_like: str | None = None) -> Stream | None:
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
        return Stream(sub, sub.new_chain(), False, "json")

    def one_task_per_key(self, path: PathT, streams: list[Stream], label: str, policy: str, *,
                         partitions_like: str | None = None) -> list[Stream] | None:
        """The streams as they are if one task already sees every record of a key (a single
        stream keyed as its source topic is); else one stream reading a repartition topic."""
        if len(streams) == 1 and not streams[0].key_changed:
            return streams
        one = self.repartition(path, streams, label, policy, partitions_like=partitions_like)
        return None if one is None else [one]

    def keyed_node(self, at: StepAt, streams: list[Stream], label: str,
                   make: Callable[[Stream], StepNode | None]) -> list[Stream] | None:
        """A stateful step over one task per key: repartition first if needed (`label` names
        the repartition topic), then the node `make` builds on the resulting stream."""
        one = self.one_task_per_key(at.path, streams, label, self.policy(at.step, at.following))
        if one is None:
            return None
        node = make(one[0])
        return one if node is None else append_node(one, node, self.policy(at.step))
