"""BatchRun: a topology over bounded inputs, from the first record to the end of input.

Rounds: each source gives a chunk (a file's rows: inputs.py; a fetch of a topic's range:
topic_input.py) to its partitions' tasks, then
every repartition topic's records (bus.py) go to the tasks reading them, until nothing is
left in memory. Every `commit_rows` input rows the tasks flush their caches and write their
stores (RocksDB, no changelog: a failed batch run starts over, it is not resumed). At the end
of input every source partition's watermark goes to +infinity, so every window closes and
every event-time timer fires (Flink's end of a bounded input), the rounds drain what that
emitted, and the outputs are committed: files first, then the topic transaction.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from processor.errors import ProcessorError, RecordError
from processor.graph import BuildContext, TopicEnd, Topology, build_topology
from processor.graph.model import entry_cap
from processor.graph.partitioning import internal_partitions
from processor.runtime import faults
from processor.runtime.batch.bus import Bus
from processor.runtime.batch.inputs import CHUNK_ROWS, BadInput, FileFeeder
from processor.runtime.batch.outputs import FileSinks, TopicOutputs
from processor.runtime.batch.tables import BatchTables
from processor.runtime.batch.topic_input import TopicFeeder
from processor.runtime.config import WorkerConfig
from processor.runtime.gc_tuning import tune_gc
from processor.runtime.kafka.collector import RecordCollector
from processor.runtime.kafka.deadletter import DeadLetter, DeadLetterWriter
from processor.runtime.kafka.serdes import Serdes
from processor.runtime.tasks.failures import SOURCE_STEP
from processor.runtime.tasks.task import Task, TaskState
from processor.serde.errors import DeserializationError
from processor.spec import LoadedSpec
from processor.spec.bounded import FileSinkSpec
from processor.state.memory import state_memory

log = logging.getLogger("processor.batch")

@dataclass
class BatchSummary:
    """What a run read and wrote (the CLI prints it)."""

    input_rows: dict[str, int] = field(default_factory=dict)  # per source
    bad_rows: dict[str, int] = field(default_factory=dict)  # per source, policy skip or dlq
    file_rows: dict[str, int] = field(default_factory=dict)  # per file sink
    topic_records: dict[str, int] = field(default_factory=dict)  # per topic written
    seconds: float = 0.0


class BatchRun:
    """One run: `run()` reads every bounded source to its end and commits the outputs."""

    def __init__(self, loaded: LoadedSpec, config: WorkerConfig, *,
                 files: dict[str, FileSinkSpec] | None = None, state_dir: Path | None = None,
                 chunk_rows: int = CHUNK_ROWS, commit_rows: int = 500_000,
                 until: dict[str, int] | None = None) -> None:
        """`files`: topics written to files instead (default: the spec's `file:` sinks).
        `until`: per source topic, read only rows with an event time before it."""
        self.spec = spec = loaded.spec
        self.topology: Topology = build_topology(loaded)
        self.config = config
        self.commit_rows = commit_rows
        base = Path(loaded.file).resolve().parent
        self._own_dir = state_dir is None
        self.state_dir = Path(tempfile.mkdtemp(prefix="processor-batch-")) if state_dir is None \
            else state_dir
        self.serdes = Serdes(config.schema_registry)
        self.memory = state_memory(config.memory_budget)
        self.tables = BatchTables(self.topology, config, self.state_dir, self.serdes)
        topics = {s.topic: TopicFeeder(n, s, config) for n, s in spec.sources.items()
                  if s.kind == "stream" and s.file is None}
        counts = {s.topic: s.partitions or self.tables.copartitioned(s.topic) or 1
                  for s in spec.sources.values() if s.kind == "stream"}
        counts.update({t: f.partitions for t, f in topics.items()})
        counts.update(self.tables.counts)
        internal = internal_partitions(self.topology, counts)
        self.topic_outputs = TopicOutputs(config, self.topology.name)
        self.bus = Bus(internal, self.topic_outputs)
        self.collector = RecordCollector(lambda: self.bus, {**counts, **internal}, self.serdes)
        self.dead_letters = DeadLetterWriter(lambda: self.bus, self.topology.dlq_topic,
                                             self.topology.name)
        if files is None:
            files = {s.topic: s.file for s in spec.sinks.values() if s.file is not None}
        self.file_sinks = FileSinks(files, base)
        self.feeders: dict[str, FileFeeder | TopicFeeder] = dict(topics)
        for src in spec.sources.values():
            if src.kind != "stream" or src.topic in topics:
                continue
            end = self._source_end(src.topic)
            self.feeders[src.topic] = FileFeeder(src, base, counts[src.topic],
                                                 self.serdes(end, True).encode, chunk_rows,
                                                 until=(until or {}).get(src.topic))
        self.tasks: dict[tuple[str, int], Task] = {}
        self.summary = BatchSummary()

    def _source_end(self, topic: str) -> TopicEnd:
        return next(sub.source for sub in self.topology.subtopologies
                    if sub.source.topic == topic)

    def _emitter_for(self, end: TopicEnd, partition: int) -> Any:
        if end.topic in self.file_sinks.writers:
            return self.file_sinks.emitter(end.topic)
        return self.collector.emitter_for(end, partition)

    def _late_emitter_for(self, end: TopicEnd, partition: int, source: str, step: str) -> Any:
        if end.topic in self.file_sinks.writers:
            return self.file_sinks.late_emitter(end.topic)
        return self.collector.late_emitter_for(end, partition, source, step)

    def _open_tasks(self) -> None:
        c = self.collector
        for sub in self.topology.subtopologies:
            for p in range(c.partitions[sub.source.topic]):
                ctx = BuildContext(self._emitter_for, p, entry_cap(self.config.cache_max_entries),
                                   late_emitter_for=self._late_emitter_for,
                                   watermark_emitter_for=c.watermark_emitter_for,
                                   partitions_of=c.partitions.__getitem__,
                                   serde_for=self.serdes, dead_letter=self.dead_letters,
                                   table_for=self.tables.global_state.table_for,
                                   memory=self.memory)
                self.tasks[(sub.source.topic, p)] = Task(self.topology.name, sub, p, ctx,
                                                         self.state_dir)
        self.tables.load(list(self.tasks.values()))
        for task in self.tasks.values():
            if task.state is TaskState.RESTORING:
                task.restored()  # fresh, empty stores; tables read

    # -- the run -------------------------------------------------------------------------------

    def run(self, *, end_of_input: bool = True,
            before_commit: Callable[[dict[tuple[str, int], Task]], None] | None = None,
            ) -> BatchSummary:
        """`end_of_input` False: the input continues elsewhere (a backfill's live topic), so
        the watermark stays where the records left it and open windows stay open in the
        stores. `before_commit`: called with the tasks (by input topic and partition), their
        stores written, before the outputs are committed (a backfill saves the state there)."""
        started = time.monotonic()
        try:
            self._open_tasks()
            if any(t not in self.file_sinks.writers for t in self.topology.output_topics):
                self.topic_outputs()  # a broker that cannot take them: said before the work
            tune_gc()
            self._read_all()
            if end_of_input:
                self._end_of_input()
            else:
                self._drain()
                self._commit()
            if before_commit is not None:
                before_commit(self.tasks)
            faults.point("batch_run.before_commit")
            self.file_sinks.commit()
            faults.point("batch_run.files_committed")
            self.topic_outputs.commit()
        except BaseException:
            self.file_sinks.abort()
            self.topic_outputs.abort()
            raise
        finally:
            for task in self.tasks.values():
                if task.state is not TaskState.CLOSED:
                    task.close(dirty=False)
            self.tables.close()
            if self._own_dir:
                shutil.rmtree(self.state_dir, ignore_errors=True)
        s = self.summary
        s.seconds = time.monotonic() - started
        s.file_rows = dict(self.file_sinks.rows)
        s.topic_records = {t: n for t, n in self.collector.produced.items()
                           if t not in self.bus.partitions}
        log.info("batch run complete", extra={
            "topology": self.topology.name, "seconds": round(s.seconds, 3),
            "input_rows": s.input_rows, "file_rows": s.file_rows,
            "topic_records": s.topic_records})
        return s

    def _read_all(self) -> None:
        """Round-robin over the sources, a chunk each, then drain the repartition topics."""
        streams = {topic: feeder.chunks() for topic, feeder in self.feeders.items()}
        since_commit = 0
        last_log = time.monotonic()
        while streams:
            for topic, chunks in list(streams.items()):
                chunk = next(chunks, None)
                if chunk is None:
                    del streams[topic]
                    continue
                for p, records in chunk.records.items():
                    task = self.tasks[(topic, p)]
                    self._guarded(task, topic, lambda t=task, r=records: t.process_records(
                        r, r[-1][3] + 1))
                for p, messages in chunk.messages.items():
                    task = self.tasks[(topic, p)]
                    self._guarded(task, topic, lambda t=task, m=messages: t.process(m))
                for bad in chunk.bad:
                    self._bad_input(topic, bad)
                n = chunk.rows + len(chunk.bad)
                self.summary.input_rows[topic] = self.summary.input_rows.get(topic, 0) + n
                since_commit += n
            self._drain()
            if since_commit >= self.commit_rows:
                self._commit()
                since_commit = 0
            if time.monotonic() - last_log >= 5.0:
                last_log = time.monotonic()
                log.info("batch progress", extra={"input_rows": self.summary.input_rows})

    def _end_of_input(self) -> None:
        for (topic, p), task in self.tasks.items():
            feeder = self.feeders.get(topic)
            if isinstance(feeder, TopicFeeder):
                task.end_input(feeder.ranges[p].end)
            elif feeder is not None:
                task.end_input(task.position or 0)
        self._drain()
        self._commit()

    def _drain(self) -> None:
        """Hand every repartition record to its reader until none is left in memory."""
        bus = self.bus
        while bus.pending():
            for (topic, p), task in self.tasks.items():
                if topic in bus.partitions:
                    messages = bus.take(topic, p)
                    if messages:
                        self._guarded(task, topic, lambda t=task, m=messages: t.process(m))

    def _commit(self) -> None:
        """Flush caches downstream and write the stores, as a checkpoint does (no changelog)."""
        while True:
            for task in self.tasks.values():
                task.flush()
            if not self.bus.pending():
                break
            self._drain()
        for task in self.tasks.values():
            task.committed({})
        if self.memory is not None:
            self.memory.enforce(op for task in self.tasks.values() for _, _, op in task.stateful)

    def _guarded(self, task: Task, topic: str, work: Any) -> None:
        """Run `work`; a record error names the file and row it came from."""
        try:
            work()
        except RecordError as exc:
            feeder = self.feeders.get(exc.topic)
            if not isinstance(feeder, FileFeeder):
                raise  # a topic's record: the error names its offset
            raise ProcessorError(f"{feeder.where(exc.offset)}: {exc}") from None

    def _bad_input(self, topic: str, bad: BadInput) -> None:
        """A row that is not a record: the source's `on_error` decides."""
        src = self.feeders[topic].src
        policy = src.on_error or self.spec.on_error
        where = bad.where
        if policy == "fail":
            raise ProcessorError(f"{where}: {bad.problem} (source on_error: fail)")
        self.summary.bad_rows[topic] = self.summary.bad_rows.get(topic, 0) + 1
        if policy == "dlq":
            self.dead_letters(DeadLetter(
                SOURCE_STEP, DeserializationError(f"{where}: {bad.problem}"), topic, 0,
                bad.offset, None, None, bad.raw,
                [("processor.file", str(bad.path).encode()),
                 ("processor.file.where", where.encode())]))
        log.warning("bad input row", extra={"source": topic, "where": where, "policy": policy,
                                            "error": bad.problem})
