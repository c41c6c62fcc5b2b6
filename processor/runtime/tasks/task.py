"""A task: one sub-topology running over one input partition, with its stores.

Lifecycle: RESTORING (stores catch up from their changelogs; input paused) -> RUNNING ->
closed clean (after a checkpoint) or dirty (uncommitted work discarded). The task never
talks to Kafka itself: the worker hands it messages, the checkpoint takes its pending
writes, and emitters passed in at build time produce its outputs.

Here: the lifecycle and the chain walker, which runs records down the chains (chains.py),
resumes a step after a failing record, routes branch cases and replayed dead letters. Its
parts: decode.py (messages -> records), event_time.py (watermark, timers, late records),
failures.py (the error policies), position.py (what a checkpoint records).
"""

from __future__ import annotations

import dataclasses
import enum
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from processor.graph import BuildContext, SubTopology
from processor.graph.layout import StoreLayout
from processor.operators import Batch, StepFailed
from processor.operators.base import Operator, TimedOperator
from processor.operators.sink import Sink
from processor.runtime.kafka.deadletter import REPLAY_STEP
from processor.runtime.tasks.chains import ChainTree, StepAt
from processor.runtime.tasks.decode import InputDecoder
from processor.runtime.tasks.event_time import EventTime
from processor.runtime.tasks.failures import FailureHandler
from processor.runtime.tasks.layouts import StoreLayouts
from processor.runtime.tasks.open_work import Holdback
from processor.runtime.tasks.position import UpstreamMarks, start_position, store_meta
from processor.state import RocksStore, encode_position
from processor.state.table import TableStore
from processor.timeutil.watermark import END_OF_TIME, Clock

log = logging.getLogger("processor.task")


class TaskState(enum.Enum):
    RESTORING = "restoring"
    RUNNING = "running"
    CLOSED = "closed"


class Task:
    """Runs one sub-topology's chains over batches from one partition."""

    def __init__(self, topology: str, sub: SubTopology, partition: int, ctx: BuildContext,
                 state_dir: Path, layouts: Mapping[str, StoreLayout] | None = None) -> None:
        self.sub = sub
        src = sub.source
        self.topic = src.topic
        self.partition = partition
        self.id = f"{sub.id}_{partition}"
        self.clock = Clock()
        # per-task tables: partition p of each table a join reads (runtime/durability/tables.py fills them);
        # one directory per task, as two sub-topologies may join the same table
        self.tables: dict[str, TableStore] = {
            t.name: TableStore(state_dir / topology / f"table-{t.name}" / self.id, ctx.memory)
            for t in sub.tables}
        self.table_topics = {t.name: t.topic for t in sub.tables}
        global_table = ctx.table_for
        ctx = dataclasses.replace(
            ctx, clock=self.clock, source_topic=src.topic,
            table_for=lambda t: self.tables[t.name] if t.kind == "table" else global_table(t))  # type: ignore[misc]
        chains, policies = sub.build_chains(ctx)
        self._tree = ChainTree(chains, sub.parents)
        # operators with a store (aggregate, window, process, join): queries.py reads them
        self.stateful = self._tree.stateful
        self.stores: dict[str, RocksStore] = {
            op.store_name: RocksStore(state_dir / topology / op.store_name / str(partition),
                                      memory=ctx.memory)
            for _, _, op in self.stateful
        }
        self.changelogs = {s.name: s.changelog_topic for s in sub.stores}
        # the topology's layout of each store: checked at restore, recorded at checkpoints
        self._layouts = StoreLayouts({n: v for n, v in (layouts or {}).items()
                                      if n in self.stores}, partition)
        self._failures = FailureHandler(self.id, self.topic, partition, policies, src.on_error,
                                        ctx.dead_letter, internal=src.internal,
                                        timestamp_field=src.timestamp_field)
        self.failures = self._failures.counts  # (policy, step, error class) -> n
        self._time = EventTime(self.id, sub, partition, ctx, self.clock, self._tree.timed,
                               self._failures, self._run_after, self._count_late)
        # repartition input: upstream partition -> highest (source offset, seq) absorbed
        self._marks = UpstreamMarks()
        kser = ctx.serde_for(src, True) if ctx.serde_for and src.key_serde else None
        vser = ctx.serde_for(src, False) if ctx.serde_for and src.value_serde else None
        self._decoder = InputDecoder(src, kser.decode if kser else None,
                                     vser.decode if vser else None, self._marks,
                                     self._time.watermark, self.clock, self._failures.undecodable)
        self._internal = src.internal
        self.needs_commit = False  # outputs produced without input progress (idle marks, timers)
        self.late_records = 0  # since the worker last exported it
        self.last_time = 0  # event time (or Kafka timestamp) of the last record processed
        self.position: int | None = None  # next input offset to process
        self.input_ended = False  # a bounded source reached its end (end_input)
        self.committed_position: int | None = None
        self.pending: dict[str, dict[bytes, bytes | None]] = {}
        self.state = TaskState.RESTORING if self.stores or self.tables else TaskState.RUNNING

    # -- restore ---------------------------------------------------------------------------

    def start_position(self) -> int | None:
        """Lowest input offset some store still needs; None when no store knows."""
        return start_position(self.stores.values())

    def restored(self) -> None:
        """Stores are caught up: bind operators, skipping input each store already holds, and
        resume event time and the upstream marks where the stores' checkpoint left them. State
        written with a layout this topology would misread stops here (layouts.py)."""
        self._layouts.check(self.stores)
        stores = [self.stores[op.store_name] for _, _, op in self.stateful]
        for (_, _, op), store in zip(self.stateful, stores, strict=True):
            pos = store.position
            op.bind(store, skip_below=-1 if pos is None else pos)
        self._time.restore([t for s in stores if (t := s.time) is not None])
        self._marks.restore(s.upstream for s in stores)
        self.state = TaskState.RUNNING
        if self._tree.timed:
            self._after_batch(-1 if self.position is None else self.position - 1)

    def position_record(self) -> bytes | None:
        """The changelog position record for this checkpoint (state/changelog.py)."""
        if self.position is None:
            return None
        return encode_position(self.position, self._upstream_marks(), self._time.state())

    def layout_record(self, store: str) -> bytes | None:
        """The changelog layout record for this checkpoint, when the store lacks it."""
        return self._layouts.to_record(store, self.stores[store])

    def _upstream_marks(self) -> bytes | None:
        return self._marks.encode() if self._internal else None

    # -- processing -------------------------------------------------------------------------

    def process(self, messages: list[Any]) -> None:
        failures = self._failures
        failures.batch_started(messages)
        try:
            batch = self._decoder.decode(messages)
            self._absorb(batch, _replayed(messages))
        finally:
            failures.batch_done()
        self._moved_to(messages[-1].offset() + 1)

    def process_records(self, batch: Batch, next_offset: int) -> None:
        """Records decoded elsewhere (a file source's rows: runtime/batch/inputs.py), as
        `(key, value, timestamp, offset)`; `next_offset`: the position after them. A failing
        record's dead letter then carries the record as JSON (there are no input bytes)."""
        try:
            self._absorb(batch, None)
        finally:
            self._failures.batch_done()
        self._moved_to(next_offset)

    def _absorb(self, batch: Batch, replays: dict[int, str] | None) -> None:
        event_time = self._time
        if event_time.tracked and not self._internal:
            event_time.observe(batch)
        if batch:
            self.last_time = batch[-1][2]
        event_time.input_arrived()
        if replays:
            self._run_with_replays(batch, replays)
        else:
            self._run(batch, 0, self._tree.roots, from_input=True)

    def _moved_to(self, position: int) -> None:
        self.position = position
        if self._time.tracked:
            self._after_batch(position - 1)

    def advance_watermark(self, watermark: int, offset: int) -> None:
        """The input partition's event time reached `watermark` by a control entry at `offset`
        rather than a record (the test driver's watermark step): windows and timers it passes
        close and the watermark goes downstream, as after a batch. The position moves past the
        entry, so a replay after a crash meets it at the same place."""
        self._time.advance_to(watermark)
        self.position = offset + 1
        if self._time.tracked:
            self._after_batch(offset)

    def end_input(self, end: int) -> None:
        """A bounded source partition reached `end` (runtime/bounded_run.py): the watermark
        goes to END_OF_TIME, so every window and timer closes and the watermark goes
        downstream, as after a batch. The position moves to `end` (past transaction markers
        that are never delivered), never back, and never past a record not processed."""
        self.input_ended = True
        if self.position is None or self.position < end:
            self.position = end
        self._time.advance_to(END_OF_TIME)
        if self._time.tracked:
            self._after_batch(self.position - 1)
            self.needs_commit = True  # windows closed and timers fired: outputs to commit

    def tick(self, now_ms: int, now_monotonic: float) -> None:
        """Between batches (every commit interval): mark an input partition idle after its
        `idle_timeout` without records, and fire due processing-time timers."""
        if self.state is not TaskState.RUNNING or not self._time.tracked:
            return
        offset = -1 if self.position is None else self.position - 1
        if self._time.tick(now_ms, now_monotonic, offset):
            self.needs_commit = True

    def _after_batch(self, offset: int) -> None:
        if self._time.after_batch(offset):
            self.needs_commit = True

    def _count_late(self, n: int) -> None:
        self.late_records += n

    def _run_after(self, step: StepAt[TimedOperator], batch: Batch) -> None:
        self._run_chain(step.chain, step.index + 1, batch, False)

    def _run(self, batch: Batch, start: int, chain_ids: range | list[int],
             from_input: bool = False) -> None:
        for ci in chain_ids:
            self._run_chain(ci, start, batch, from_input)

    def _run_with_replays(self, batch: Batch, replays: dict[int, str]) -> None:
        """A batch holding dead letters put back by `processor dlq replay`: such a record goes
        only down the chain of the step that failed on it, and writes nothing to the sinks
        before that step — the other pipelines and earlier sinks had it the first time."""
        everything = self._tree.roots
        run: Batch = []
        for record in batch:
            step = replays.get(record[3])
            failed_at = self._tree.find(step) if step is not None else None
            if failed_at is None:  # not a replay, or its step is gone: a new record
                run.append(record)
                continue
            if run:
                self._run(run, 0, everything, from_input=True)
                run = []
            self._run_chain(self._tree.root_of(failed_at.chain), 0, [record], True,
                            replayed_at=failed_at)
        if run:
            self._run(run, 0, everything, from_input=True)

    def _run_chain(self, ci: int, start: int, batch: Batch, from_input: bool,
                   replayed_at: StepAt[Operator] | None = None) -> None:
        """Records through chain `ci` from operator `start`. A record a step fails on goes to
        that step's policy; the step then resumes with the records after it (StepFailed's
        contract), its outputs so far going on first, so order is kept. A chain ending in a
        branch then runs each case's records down that case's chain.

        `replayed_at`: the step a replayed dead letter failed at. The sinks before it in its
        chain, and every sink in the chains above, already wrote the record: they are skipped."""
        tree = self._tree
        chain = tree.chains[ci]
        sinks_done = 0 if replayed_at is None else (
            replayed_at.index if replayed_at.chain == ci
            else len(chain) if ci in tree.ancestors[replayed_at.chain] else 0)
        router = tree.routers.get(ci)
        last = len(chain) - 1
        out = batch
        for i in range(start, len(chain)):
            op, pending = chain[i], out
            if i < sinks_done and isinstance(op, Sink):
                continue
            while True:
                try:
                    out = op.process(pending)
                    break
                except StepFailed as exc:
                    if exc.index < 0:
                        raise self._failures.fatal(exc) from exc.cause
                    self._failures.step_failed(
                        exc, input_record=from_input and i <= tree.first_stateful[ci], chain=ci)
                    if exc.partial:
                        self._run_chain(ci, i + 1, exc.partial, from_input, replayed_at)
                    if router is not None and i == last:
                        self._route(ci, router.routed, from_input, replayed_at)
                    pending = pending[exc.index + 1:]
                    if not pending:
                        return
            if router is not None and i == last:
                self._route(ci, router.routed, from_input, replayed_at)
                return
            if not out:
                return

    def _route(self, ci: int, routed: list[Batch], from_input: bool,
               replayed_at: StepAt[Operator] | None) -> None:
        """A branch's cases: each batch down its case's chain (records of a stateful step
        before the branch are derived results, not input records)."""
        tree = self._tree
        from_input = from_input and tree.first_stateful[ci] >= len(tree.chains[ci])
        children = tree.children[ci]
        for case, records in enumerate(routed):
            if records and case in children:
                self._run_chain(children[case], 0, records, from_input, replayed_at)

    # -- checkpoint --------------------------------------------------------------------------

    @property
    def watermark(self) -> int:
        """The task's current watermark (NO_WATERMARK before any event time)."""
        return self.clock.current

    @property
    def pattern_counts(self) -> dict[str, list[int]]:
        """Per pattern step, [matches, timeouts] since the worker last exported (and cleared) it."""
        return self._time.pattern_counts

    def silent_upstream(self) -> list[str]:
        """The upstream partitions (topic[partition]) a repartition input never heard from:
        they hold its watermark at its start (e.g. right after a restore)."""
        return [h.partition for h in self._time.holding_back() if h.watermark is None]

    def open_work(self) -> tuple[dict[str, dict[str, int]], list[Holdback]]:
        """Windows and timers its committed stores hold open, and the input partitions holding
        its watermark back (runtime/tasks/open_work.py)."""
        return self._time.pending(), self._time.holding_back()

    def flush(self) -> None:
        """Emit cached results downstream and stage the stores' changelog writes."""
        for ci, oi, op in self.stateful:
            emits, writes = op.flush()
            if writes:
                self.pending.setdefault(op.store_name, {}).update(writes)
            if emits:
                self._run(emits, oi + 1, [ci])

    @property
    def has_progress(self) -> bool:
        return self.needs_commit or (self.position is not None
                                     and self.position != self.committed_position)

    def committed(self, changelog_next: dict[str, int]) -> None:
        """The transaction (or flush + offset commit) succeeded: write the stores atomically."""
        upstream, time_state = self._upstream_marks(), self._time.state()
        for name, store in self.stores.items():
            meta = store_meta(self.position, upstream, time_state, changelog_next.get(name))
            meta.update(self._layouts.meta(name, store))
            store.apply(self.pending.get(name, {}), meta)
        self.pending = {}
        for _, _, op in self.stateful:
            op.committed()
        self.committed_position = self.position
        self.needs_commit = False

    def close(self, *, dirty: bool) -> None:
        if dirty:
            for _, _, op in self.stateful:
                op.discard()
            self.pending = {}
        for store in [*self.stores.values(), *self.tables.values()]:
            store.close()
        self.state = TaskState.CLOSED
        log.info("task closed", extra={"task": self.id, "topic": self.topic,
                                       "partition": self.partition, "dirty": dirty,
                                       "offset": self.position,
                                       "duplicates_dropped": self._marks.duplicates_dropped})


def _replayed(messages: list[Any]) -> dict[int, str] | None:
    """Offsets of replayed dead letters in the batch -> the step that failed on them.
    One C call per message without headers: the common case stays cheap."""
    found = None
    for m in messages:
        headers = m.headers()
        if headers:
            for k, v in headers:
                if k == REPLAY_STEP and v is not None:
                    if found is None:
                        found = {}
                    found[m.offset()] = v.decode("utf-8", "replace")
    return found
