"""TopologyTestDriver: a topology run in-process, deterministically, without a broker.

The real graph, tasks, operators, record collector, dead-letter writer, table follower and
RocksDB stores run; only Kafka is replaced by in-memory topics (topics.py). The driver plays
the worker's loop: each task reads the committed records of its input partition, and a
checkpoint flushes every task (aggregate caches, `emit: on_checkpoint`), commits the
outputs and writes the stores, as an exactly-once transaction does. A repartition topic is
read by the downstream tasks only once committed (read_committed), so `run()` alternates
processing and checkpoints until nothing is left to read. A crash closes every task dirty,
aborts what was produced since the last checkpoint and reopens the tasks from their stores:
the input is replayed from the committed position, as after a worker crash.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from processor.graph import BuildContext, TopicEnd, Topology, build_topology
from processor.graph.partitioning import internal_partitions
from processor.runtime.durability.tables import TableFollower
from processor.runtime.global_state import GlobalState
from processor.runtime.kafka.collector import RecordCollector
from processor.runtime.kafka.deadletter import DeadLetterWriter
from processor.runtime.kafka.serdes import Serdes
from processor.runtime.tasks.task import Task, TaskState
from processor.spec import LoadedSpec, load_spec
from processor.state.partitioner import partition_for
from processor.testing.topics import (
    Message,
    StoredRecord,
    Topics,
    TopicsConsumer,
    TopicsProducer,
)


class DriverError(Exception):
    """A call the topology cannot answer (unknown source, sink or store, bad partition)."""


class TopologyTestDriver:
    """Pipe records and watermarks into sources, advance processing time, checkpoint, crash;
    read the outputs
    (committed records, decoded) and the stores. `auto_checkpoint`: checkpoint after each
    `run()` pass, as a worker does every commit interval; off, only `checkpoint()` commits."""

    def __init__(self, topology: str | Path | LoadedSpec, *, partitions: dict[str, int] | None = None,
                 state_dir: Path | None = None, auto_checkpoint: bool = True,
                 cache_max_entries: int = 100_000) -> None:
        loaded = topology if isinstance(topology, LoadedSpec) else load_spec(topology)
        self.spec = loaded.spec
        self.topology: Topology = build_topology(loaded)
        self.auto_checkpoint = auto_checkpoint
        self.cache_max_entries = cache_max_entries
        self._own_dir = state_dir is None
        self.state_dir = Path(tempfile.mkdtemp(prefix="processor-test-")) if state_dir is None else state_dir
        self.topics = Topics()
        self.serdes = Serdes()
        self._producer = TopicsProducer(self.topics)
        self.collector = RecordCollector(lambda: self._producer, self.topics.partitions, self.serdes)
        self.dead_letters = DeadLetterWriter(lambda: self._producer, self.topology.dlq_topic,
                                             self.topology.name)
        counts = partitions or {}
        for name, src in self.spec.sources.items():
            self.topics.create(src.topic, counts.get(name) or src.partitions or 1)
        self._create_outputs()
        self.processing_time = 0  # ms, advanced by advance_time()
        self._monotonic_offset = 0.0
        self.committed_offsets: dict[str, int] = {}  # task id -> next input offset committed
        self.tasks: list[Task] = []
        self._open()

    def _create_outputs(self) -> None:
        """Partition counts as the worker gives them (runtime/kafka/topics.py)."""
        self.topics.partitions.update(
            internal_partitions(self.topology, self.topics.partitions))
        for sub in self.topology.subtopologies:
            for sink in sub.sinks:
                if not sink.internal:
                    self.topics.create(sink.topic, sink.partitions or 1)
        self.topics.create(self.topology.dlq_topic, self.topology.dlq_partitions)

    # -- lifecycle ------------------------------------------------------------------------

    def _open(self) -> None:
        """Open every task and table from the state directory, at its committed position."""
        self.tables = TableFollower(TopicsConsumer(self.topics))  # type: ignore[arg-type]
        self.global_state = GlobalState(self.topology, self.state_dir, self.serdes)
        self.global_state.start(self.tables, self.topics.partitions, 10.0)
        self.tasks = []
        for sub in self.topology.subtopologies:
            for p in range(self.topics.partitions[sub.source.topic]):
                ctx = BuildContext(self.collector.emitter_for, p, self.cache_max_entries,
                                   late_emitter_for=self.collector.late_emitter_for,
                                   watermark_emitter_for=self.collector.watermark_emitter_for,
                                   partitions_of=self.topics.partitions.__getitem__,
                                   serde_for=self.serdes, dead_letter=self.dead_letters,
                                   table_for=self.global_state.table_for)
                task = Task(self.topology.name, sub, p, ctx, self.state_dir)
                for name, store in task.tables.items():
                    self.tables.add(f"{task.id}/{name}", task.table_topics[name], [p], store,
                                    on_ready=lambda: None)
                self.tasks.append(task)
        self.tables.bootstrap(10.0)
        for task in self.tasks:
            if task.state is TaskState.RESTORING:
                task.restored()
            start, committed = task.start_position(), self.committed_offsets.get(task.id)
            target = max(x for x in (start, committed, 0) if x is not None)
            if start is not None or committed is not None:
                task.position = task.committed_position = target

    def close(self) -> None:
        """Close the tasks clean and remove the state directory the driver made."""
        for task in self.tasks:
            if task.state is not TaskState.CLOSED:
                task.close(dirty=False)
        self.global_state.close()
        if self._own_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def __enter__(self) -> TopologyTestDriver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- input and time ---------------------------------------------------------------------

    def end_of(self, source: str) -> TopicEnd:
        """The topic end (formats, codecs) records piped into `source` are encoded with."""
        src = self.spec.sources.get(source)
        if src is None:
            raise DriverError(f"no source {source!r} (sources: {', '.join(self.spec.sources)})")
        for sub in self.topology.subtopologies:
            if sub.source.topic == src.topic:
                return sub.source
        return TopicEnd(src.topic, src.key.format, src.value.format,
                        key_serde=src.key if src.key.schema_file else None,
                        value_serde=src.value if src.value.schema_file else None)

    def pipe(self, source: str, key: Any, value: Any, timestamp: int = 0, *,
             partition: int | None = None, headers: dict[str, str] | None = None) -> None:
        """Append one record to a source's topic (encoded with the source's formats); it is
        processed by the next `run()`. Without `partition`: Kafka's partitioner on the key."""
        end = self.end_of(source)
        kbytes = None if key is None else self.serdes(end, True).encode(key)
        vbytes = None if value is None else self.serdes(end, False).encode(value)
        count = self.topics.partitions[end.topic]
        if partition is None:
            partition = partition_for(kbytes, count) if kbytes is not None else 0
        if not 0 <= partition < count:
            raise DriverError(f"source {source!r} has {count} partition(s), not {partition}")
        hdrs = [(k, str(v).encode()) for k, v in (headers or {}).items()]
        self.topics.append(end.topic, partition, StoredRecord(kbytes, vbytes, timestamp, hdrs))
        self.topics.stable[(end.topic, partition)] = len(self.topics.logs[(end.topic, partition)])

    def pipe_watermark(self, source: str, watermark: int, *, partition: int | None = None) -> None:
        """Append a watermark to a source's partitions (all, or `partition`): processed by the
        next `run()` at its place in the input, it moves the partition's event time to
        `watermark` (ms) as a record with event time `watermark + max_out_of_orderness` would,
        without a record: windows ending at or before it close, event-time timers fire, and
        the watermark reaches the tasks downstream. A crash replays it where it was."""
        end = self.end_of(source)
        if self.spec.sources[source].kind != "stream":
            raise DriverError(f"source {source!r} is a {self.spec.sources[source].kind}: "
                              "a watermark applies to stream sources")
        count = self.topics.partitions[end.topic]
        if partition is not None and not 0 <= partition < count:
            raise DriverError(f"source {source!r} has {count} partition(s), not {partition}")
        for p in range(count) if partition is None else (partition,):
            self.topics.append(end.topic, p, StoredRecord(None, None, watermark,
                                                          watermark=watermark))
            self.topics.stable[(end.topic, p)] = len(self.topics.logs[(end.topic, p)])

    def run(self) -> None:
        """Process everything readable; with auto checkpoints, checkpoint after each pass and go
        on while a checkpoint made repartitioned records readable downstream."""
        while True:
            self._pass()
            if not self.auto_checkpoint:
                return
            self.checkpoint()
            if not self._readable():
                return

    def _readable(self) -> bool:
        """Whether some task has committed input it has not read yet."""
        stable = self.topics.stable
        return any(
            stable.get((t.topic, t.partition), 0) > (t.position or 0) for t in self.tasks)

    def _pass(self) -> None:
        while self.tables.step(100_000, 0):
            pass
        for task in self.tasks:
            batch: list[Message] = []
            for m in self.topics.read(task.topic, task.partition, task.position or 0,
                                      control=True):
                if m.watermark is None:
                    batch.append(m)
                    continue
                if batch:
                    task.process(batch)
                    batch = []
                task.advance_watermark(m.watermark, m.offset())
            if batch:
                task.process(batch)

    def advance_time(self, ms: int) -> None:
        """Advance processing time by `ms`: processing-time timers fire and source partitions
        without input for their `idle_timeout` go idle (a worker's tick between batches)."""
        self.processing_time += ms
        self._monotonic_offset += ms / 1000
        for task in self.tasks:
            task.tick(self.processing_time, time.monotonic() + self._monotonic_offset)
        self.run()

    def checkpoint(self) -> None:
        """Flush every task, commit its outputs and offsets, write its stores."""
        running = [t for t in self.tasks if t.state is TaskState.RUNNING]
        for task in running:
            task.flush()
        self.topics.commit()
        for task in running:
            if task.has_progress or task.pending:
                task.committed({})
            if task.position is not None:
                self.committed_offsets[task.id] = task.position

    def crash(self) -> None:
        """Close every task dirty, abort the open transaction, reopen from the state dir."""
        for task in self.tasks:
            task.close(dirty=True)
        self.global_state.close()
        self.topics.abort()
        self._open()

    # -- output and state ---------------------------------------------------------------------

    def _sink_end(self, topic: str) -> TopicEnd:
        for sub in self.topology.subtopologies:
            for end in sub.sinks:
                if end.topic == topic:
                    return end
        raise DriverError(f"no sink, late or dead-letter topic {topic!r}")

    def output_topics(self) -> list[str]:
        """The sink and late topics (external), in topology order, then the dead-letter topic."""
        seen = [e.topic for sub in self.topology.subtopologies for e in sub.sinks if not e.internal]
        return [*dict.fromkeys(seen), self.topology.dlq_topic]

    def sink_topic(self, name: str) -> str:
        """A sink's topic by sink name (`sinks:`) or topic name."""
        sink = self.spec.sinks.get(name)
        return sink.topic if sink is not None else name

    def output(self, topic: str) -> list[dict[str, Any]]:
        """The committed records of an output topic, decoded, partition by partition:
        {key, value, timestamp, partition} (+ headers for dead letters and late records).
        Dead letters hold the bytes as read: the key as text, the value as JSON when it
        parses, else as text."""
        topic = self.sink_topic(topic)
        dead = topic == self.topology.dlq_topic
        end = None if dead else self._sink_end(topic)
        out = []
        for p, _, rec in self.topics.committed(topic):
            out.append(_decoded(rec, p, None if end is None else self.serdes(end, True).decode,
                                None if end is None else self.serdes(end, False).decode))
        return out

    def store(self, name: str) -> dict[Any, Any]:
        """A state store's committed entries across partitions, decoded when JSON or text."""
        entries: dict[Any, Any] = {}
        found = False
        for task in self.tasks:
            store = task.stores.get(name)
            if store is None:
                continue
            found = True
            for k, v in store.items():
                entries[_loose(k)] = _loose(v)
        if not found:
            raise DriverError(f"no store {name!r}")
        return entries


def _text(raw: bytes | None) -> Any:
    """Text if it decodes, else the bytes (a dead letter's key: the bytes as read)."""
    if raw is None:
        return None
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw


def _loose(raw: bytes | None) -> Any:
    """JSON if it parses, else text if it decodes, else the bytes."""
    if raw is None:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:
            return raw.decode()
        except UnicodeDecodeError:
            return raw


def _decoded(rec: StoredRecord, partition: int, kdec: Any, vdec: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "key": (kdec(rec.key) if kdec and rec.key is not None else _text(rec.key)),
        "value": (vdec(rec.value) if vdec and rec.value is not None else _loose(rec.value)),
        "timestamp": rec.timestamp, "partition": partition}
    if rec.headers:
        out["headers"] = {k: v.decode("utf-8", "replace") for k, v in rec.headers}
    return out
