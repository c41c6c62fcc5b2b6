"""The nodes of a topology graph: topic ends, stores, steps, and what a task supplies to build them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from processor.operators import Operator
from processor.operators.sink import Emitter
from processor.spec.loader import PathT
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


@dataclass
class StepNode:
    path: PathT
    kind: str
    label: str
    build: Callable[[BuildContext], Operator]
    store: StoreDef | None = None
    sink: TopicEnd | None = None
    late: TopicEnd | None = None  # where a window's late records go
    on_error: str = "dlq"  # dlq | skip | fail for records this step fails on
    table: TableDef | None = None  # the table a join step reads

    def describe(self) -> str:
        text = f"{self.kind} {self.label}".rstrip()
        if self.store:
            text += f" [store {self.store.name}, changelog {self.store.changelog_topic}]"
        if self.sink:
            text += " [repartition]" if self.sink.internal else ""
        if self.late:
            text += f" [late records to {self.late.topic}]"
        if self.table:
            text += f" [{self.table.kind.replace('_', ' ')} {self.table.name} <- {self.table.topic}]"
        if self.on_error != "dlq":
            text += f" [on_error {self.on_error}]"
        return text
