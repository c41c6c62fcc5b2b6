"""The built topology: sub-topologies of step nodes, the topics they read and write, the stores.

A sub-topology is the unit that runs as one task per partition of its source topic; its chains
are lists of step nodes (a branch case continues in a child chain). Nodes hold a `build`
function: the operators are made per task, from what the runtime supplies (`BuildContext`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from processor.expressions import BroadcastStates
from processor.graph.describe import describe_topology
from processor.operators import Operator
from processor.operators.fusion import fuse
from processor.operators.sink import Emitter
from processor.spec.loader import PathT
from processor.state.memory import StateMemory
from processor.timeutil.watermark import Clock


@dataclass(frozen=True)
class TopicEnd:
    """A topic read or written by a sub-topology, with its formats."""

    topic: str
    key_format: str = "string"
    value_format: str = "json"
    timestamp_field: str | None = None
    timestamp_unit: str = "ms"
    partitions: int | None = None
    internal: bool = False
    max_out_of_orderness_ms: int = 0
    idle_timeout_ms: int | None = None
    # a repartition topic read: the source topics of its feeders, in feeder order (their
    # partitions report watermarks); written: the same, plus which feeder this end is
    upstream_topics: tuple[str, ...] = ()
    feeder: int = 0
    side: int | None = None  # joins: which input of the join this feeder carries
    partitions_like: str | None = None  # create with this topic's partition count (co-partitioning)
    on_error: str = "dlq"  # policy for records that fail to decode (sources only)
    key_serde: Any = None  # the full SerdeSpec (schema files resolved) when the format needs one
    value_serde: Any = None


@dataclass(frozen=True)
class TableDef:
    """A table source a join reads: per task (`table`) or on every worker (`global_table`)."""

    name: str
    topic: str
    kind: str  # table | global_table
    key_format: str = "string"
    value_format: str = "json"
    key_serde: Any = None
    value_serde: Any = None

    @property
    def end(self) -> TopicEnd:
        return TopicEnd(self.topic, self.key_format, self.value_format, key_serde=self.key_serde,
                        value_serde=self.value_serde)


@dataclass(frozen=True)
class StoreDef:
    name: str
    changelog_topic: str
    subtopology: int


@dataclass
class BuildContext:
    """What the runtime supplies when it instantiates a sub-topology's operators for a task."""

    emitter_for: Callable[[TopicEnd, int], Emitter]  # (topic, the task's partition)
    partition: int = 0
    cache_max_entries: int = 100_000
    clock: Clock = field(default_factory=Clock)  # the task's event-time view
    source_topic: str = ""
    # (late topic, partition, source topic, step name) -> writer of a window's late records
    late_emitter_for: Callable[[TopicEnd, int, str, str], Callable[[list[Any]], None]] | None = None
    # (repartition topic, partition) -> writer of this partition's watermark (None = idle)
    watermark_emitter_for: Callable[[TopicEnd, int], Callable[[int | None], None]] | None = None
    partitions_of: Callable[[str], int] | None = None
    # builds the codec of a key or value side of a topic end: (end, is_key) -> Serde
    serde_for: Callable[[TopicEnd, bool], Any] | None = None
    dead_letter: Callable[[Any], None] | None = None  # writes a runtime DeadLetter
    table_for: Callable[[TableDef], Any] | None = None  # the store holding a table (get(bytes))
    memory: StateMemory | None = None  # the worker's shared RocksDB memory (None: per store)


NO_ENTRY_CAP = 2**62


def entry_cap(cache_max_entries: int | None) -> int:
    """An operator's cache entry cap from the worker's setting (None: only the budget bounds it)."""
    return NO_ENTRY_CAP if cache_max_entries is None else cache_max_entries


@dataclass
class StepNode:
    path: PathT
    kind: str
    label: str
    build: Callable[[BuildContext], Operator]
    store: StoreDef | None = None
    sink: TopicEnd | None = None
    late: TopicEnd | None = None  # where a window's late records go
    side: TopicEnd | None = None  # a topic the step writes itself (a pattern's timeouts)
    on_error: str = "dlq"  # dlq | skip | fail for records this step fails on
    table: TableDef | None = None  # the table a join step reads
    # a stateful step: what decides how its store's bytes are read (graph/layout.py)
    state: dict[str, Any] | None = None


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
                + [s.late for chain in self.chains for s in chain if s.late]
                + [s.side for chain in self.chains for s in chain if s.side])

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
    # source topics' `partitions:` as declared, by topic: the count a missing one is created with
    source_partitions: dict[str, int] = field(default_factory=dict)
    # what this topology's expressions and process functions read as `broadcast`: the worker
    # running it installs its broadcast state here (one per topology, never shared)
    broadcast: BroadcastStates = field(default_factory=BroadcastStates)

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
    def output_topics(self) -> list[str]:
        """Every external topic written (sinks and late-records topics), in topology order."""
        return list(dict.fromkeys(e.topic for sub in self.subtopologies for e in sub.sinks
                                  if not e.internal))

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
        """What `processor describe` prints."""
        return describe_topology(self)
