"""A task: one sub-topology running over one input partition, with its stores.

Lifecycle: RESTORING (stores catch up from their changelogs; input paused) -> RUNNING ->
closed clean (after a checkpoint) or dirty (uncommitted work discarded). The task never
talks to Kafka itself: the worker hands it messages, the checkpoint takes its pending
writes, and emitters passed in at build time produce its outputs.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import time
from bisect import bisect_left
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from processor.codegen import compile_generated
from processor.errors import ProcessorError, RecordError
from processor.graph import BuildContext, SubTopology
from processor.operators import Batch, StepFailed
from processor.operators.sink import EmitFailed, Sink
from processor.runtime.deadletter import REPLAY_STEP, DeadLetter, derived_bytes
from processor.serde import serde_for
from processor.serde.errors import DeserializationError
from processor.serde.formats import INLINE_GLOBALS, inline_decode
from processor.state import RocksStore, encode_position
from processor.state.store import (
    META_CHANGELOG_OFFSET,
    META_POSITION,
    META_TIME,
    META_UPSTREAM,
)
from processor.state.table import TableStore
from processor.timeutil.timestamps import iso_to_ms
from processor.timeutil.watermark import (
    NO_WATERMARK,
    Clock,
    PartitionWatermark,
    UpstreamWatermarks,
)

log = logging.getLogger("processor.task")


class TaskState(enum.Enum):
    RESTORING = "restoring"
    RUNNING = "running"
    CLOSED = "closed"


class Task:
    """Runs one sub-topology's chains over batches from one partition."""

    def __init__(self, topology: str, sub: SubTopology, partition: int, ctx: BuildContext,
                 state_dir: Path) -> None:
        self.sub = sub
        src = sub.source
        self.topic = src.topic
        self.partition = partition
        self.id = f"{sub.id}_{partition}"
        self.clock = Clock()
        # per-task tables: partition p of each table a join reads (runtime/tables.py fills them);
        # one directory per task, as two sub-topologies may join the same table
        self.tables: dict[str, TableStore] = {
            t.name: TableStore(state_dir / topology / f"table-{t.name}" / self.id)
            for t in sub.tables}
        self.table_topics = {t.name: t.topic for t in sub.tables}
        global_table = ctx.table_for
        ctx = dataclasses.replace(
            ctx, clock=self.clock, source_topic=src.topic,
            table_for=lambda t: self.tables[t.name] if t.kind == "table" else global_table(t))  # type: ignore[misc]
        self.chains, self.policies = sub.build_chains(ctx)
        # branch cases: chain -> child chains by case; chain -> the chains above it
        self._children: dict[int, dict[int, int]] = {}
        for child, (parent, case) in sub.parents.items():
            self._children.setdefault(parent, {})[case] = child
        self._ancestors = {ci: _ancestors(ci, sub.parents) for ci in range(len(self.chains))}
        self._roots = [ci for ci in range(len(self.chains)) if ci not in sub.parents]
        # where each chain's first stateful operator sits: failures up to it are failures of
        # one input record (dead-lettered with its bytes); after it, of derived results
        self._first_stateful = [next((i for i, op in enumerate(chain) if getattr(op, "stateful", False)),
                                     len(chain)) for chain in self.chains]
        self._dead_letter = ctx.dead_letter
        self._source_policy = src.on_error
        self.failures: dict[tuple[str, str, str], int] = {}  # (policy, step, error class) -> n
        self._messages: list[Any] = []  # the batch being processed, for dead letters
        # (input offset, chain) of this batch already dead-lettered: a replay of the letter
        # re-runs the whole chain for that input, so one letter per chain is enough
        self._dead_letters: set[tuple[int, int | None]] = set()
        self._failure_log = FailureLog()
        # operators with a store (aggregate, window, process) and, among them, the event-time ones
        self.stateful: list[tuple[int, int, Any]] = [
            (ci, oi, op) for ci, chain in enumerate(self.chains)
            for oi, op in enumerate(chain) if getattr(op, "stateful", False)
        ]
        self.timed = [entry for entry in self.stateful if hasattr(entry[2], "on_watermark")]
        self.stores: dict[str, RocksStore] = {
            op.store_name: RocksStore(state_dir / topology / op.store_name / str(partition))
            for _, _, op in self.stateful
        }
        self.changelogs = {s.name: s.changelog_topic for s in sub.stores}
        self._ts_field = src.timestamp_field
        self._internal = src.internal
        kser = ctx.serde_for(src, True) if ctx.serde_for and src.key_serde else None
        vser = ctx.serde_for(src, False) if ctx.serde_for and src.value_serde else None
        self._kdec = kser.decode if kser else serde_for(src.key_format).decode
        self._decode_fast = _batch_decoder(src.key_format, src.value_format,
                                           self._ts_field, src.timestamp_unit,
                                           kser.decode if kser else None,
                                           vser.decode if vser else None)
        # event time: this partition's watermark, or the minimum over the upstream partitions
        self.watermark: PartitionWatermark | UpstreamWatermarks = (
            UpstreamWatermarks(sum(ctx.partitions_of(t) for t in src.upstream_topics))
            if src.internal and ctx.partitions_of and src.upstream_topics
            else PartitionWatermark(src.max_out_of_orderness_ms))
        self._forwarders = [ctx.watermark_emitter_for(end, partition) for end in sub.sinks
                            if end.internal and ctx.watermark_emitter_for]
        self._tracks_time = bool(self.timed or self._forwarders)
        self._idle_timeout_s = (src.idle_timeout_ms / 1000
                                if src.idle_timeout_ms and not src.internal else None)
        self._last_input = time.monotonic()
        self._idle = False
        self._forwarded: int | None = NO_WATERMARK  # last watermark sent downstream (None = idle)
        self.needs_commit = False  # outputs produced without input progress (idle marks, timers)
        self.late_records = 0
        self.last_time = 0  # event time (or Kafka timestamp) of the last record processed
        # repartition input: upstream partition -> highest (source offset, seq) absorbed
        self.upstream: dict[int, tuple[int, int]] = {}
        self.duplicates_dropped = 0
        self.position: int | None = None  # next input offset to process
        self.committed_position: int | None = None
        self.pending: dict[str, dict[bytes, bytes]] = {}
        self.state = TaskState.RESTORING if self.stores or self.tables else TaskState.RUNNING

    # -- restore ---------------------------------------------------------------------------

    def start_position(self) -> int | None:
        """Lowest input offset some store still needs; None when no store knows."""
        positions = [s.position for s in self.stores.values()]
        known = [p for p in positions if p is not None]
        return min(known) if known and len(known) == len(positions) else None

    def restored(self) -> None:
        """Stores are caught up: bind operators, skipping input each store already holds, and
        resume event time where the stores' checkpoint left it."""
        marks: dict[int, tuple[int, int]] | None = None
        for _, _, op in self.stateful:
            store = self.stores[op.store_name]
            pos = store.position
            op.bind(store, skip_below=-1 if pos is None else pos)
            if store.time is not None:
                self.watermark.restore(orjson.loads(store.time))
            raw = store.upstream
            if raw is not None:
                theirs = {int(p): (m[0], m[1]) for p, m in orjson.loads(raw).items()}
                # stores of one task are checkpointed together; if a crash split them,
                # the lower marks re-admit what the lagging store still needs
                marks = theirs if marks is None else {
                    p: min(m, theirs.get(p, m)) for p, m in marks.items()}
        self.upstream = marks or {}
        self.clock.advance(self.watermark.current)
        self.state = TaskState.RUNNING
        if self.timed:
            self._after_batch(-1 if self.position is None else self.position - 1)

    def upstream_marks(self) -> bytes | None:
        if not self._internal:
            return None
        return orjson.dumps({str(p): list(m) for p, m in self.upstream.items()})

    def time_state(self) -> bytes | None:
        return orjson.dumps(self.watermark.state()) if self._tracks_time else None

    def position_record(self) -> bytes | None:
        """The changelog position record for this checkpoint (state/changelog.py)."""
        if self.position is None:
            return None
        return encode_position(self.position, self.upstream_marks(), self.time_state())

    # -- processing -------------------------------------------------------------------------

    def _decode(self, messages: list[Any]) -> Batch:
        if self._internal:
            return self._decode_envelopes(messages)
        return self._decode_fast(messages)

    def _decode_envelopes(self, messages: list[Any]) -> Batch:
        """Repartition records are `[upstream slot, source offset, seq, value]` (plus the side
        for a join's input); watermark reports `[upstream slot, watermark | null]`. A slot is
        a feeder's partition, numbered after the partitions of the feeders before it."""
        kdec, marks, loads = self._kdec, self.upstream, orjson.loads
        wm = self.watermark
        out: Batch = []
        offsets: list[int] = []
        before: list[int] = []
        current = wm.current
        for m in messages:
            try:
                envelope = loads(m.value())
                if len(envelope) == 2:
                    int(envelope[0])
                else:
                    part, off, seq, value = envelope[:4]
                    if len(envelope) == 5:  # a join input: (side, value)
                        value = (envelope[4], value)
                    key = kdec(m.key())
            except Exception as exc:  # not written by a processor task
                self._fail_message(m, exc)
                continue
            if len(envelope) == 2:
                if isinstance(wm, UpstreamWatermarks):
                    current = wm.report(envelope[0], envelope[1])
                continue
            mark = (off, seq)
            last = marks.get(part)
            if last is not None and mark <= last:
                self.duplicates_dropped += 1
                continue  # re-sent by an upstream task replaying after a crash
            marks[part] = mark
            out.append((key, value, m.timestamp()[1], m.offset()))
            offsets.append(m.offset())
            before.append(current)
        self.clock.set_batch(offsets, before, current)
        return out

    def _observe_time(self, batch: Batch) -> None:
        """A source partition's watermark, before each record (for windows) or per batch."""
        wm = self.watermark
        assert isinstance(wm, PartitionWatermark)
        if self.timed:
            before = wm.observe([r[2] for r in batch])
            self.clock.set_batch([r[3] for r in batch], before, wm.current)
        elif batch:
            wm.observe((max(r[2] for r in batch),))
            self.clock.advance(wm.current)

    def process(self, messages: list[Any]) -> None:
        self._messages = messages
        try:
            try:
                batch = self._decode(messages)
            except Exception:
                batch = self._decode_each(messages)
            if self._tracks_time and not self._internal:
                self._observe_time(batch)
            if batch:
                self.last_time = batch[-1][2]
            self._last_input = time.monotonic()
            self._idle = False
            replays = _replayed(messages)
            if replays:
                self._run_with_replays(batch, replays)
            else:
                self._run(batch, 0, self._roots, from_input=True)
        finally:
            self._messages = []
            self._dead_letters.clear()
        self.position = messages[-1].offset() + 1
        if self._tracks_time:
            self._after_batch(self.position - 1)

    def _decode_each(self, messages: list[Any]) -> Batch:
        """The batch decoder failed: decode record by record, failures to their policy."""
        batch: Batch = []
        for m in messages:
            try:
                batch.extend(self._decode_fast([m]))
            except Exception as exc:
                self._fail_message(m, exc)
        return batch

    def _after_batch(self, offset: int) -> None:
        """Close what the watermark passed, send late records, forward the watermark."""
        current = self.clock.current
        for ci, oi, op in self.timed:
            self._fire(ci, oi, lambda op=op: op.on_watermark(current, offset))
        self._drain_late()
        self._forward_watermark()

    def _drain_late(self) -> None:
        for ci, _, op in self.timed:
            late = op.late
            if late:
                sink = getattr(op, "late_sink", None)
                pending = late
                while sink is not None and pending:
                    try:
                        sink(pending)
                        break
                    except EmitFailed as exc:  # this late record cannot go to the late topic
                        record = pending[exc.index][0]
                        self._fail(StepFailed(op.name, record, exc.cause), False, ci)
                        pending = pending[exc.index + 1:]
                self.late_records += len(late)
                late.clear()

    def _forward_watermark(self) -> None:
        if not self._forwarders:
            return
        wm = self.watermark
        idle = self._idle or (isinstance(wm, UpstreamWatermarks) and wm.all_idle)
        status = None if idle else self.clock.current
        if status == self._forwarded or status == NO_WATERMARK:
            return
        for forward in self._forwarders:
            forward(status)
        self._forwarded = status
        self.needs_commit = True

    def tick(self, now_ms: int, now_monotonic: float) -> None:
        """Between batches (every commit interval): mark an input partition idle after its
        `idle_timeout` without records, and fire due processing-time timers."""
        if self.state is not TaskState.RUNNING or not self._tracks_time:
            return
        if (self._idle_timeout_s is not None and not self._idle
                and now_monotonic - self._last_input >= self._idle_timeout_s):
            self._idle = True
            log.info("input partition idle", extra={"task": self.id, "topic": self.topic,
                                                    "partition": self.partition})
        offset = -1 if self.position is None else self.position - 1
        for ci, oi, op in self.timed:
            fire = getattr(op, "on_processing_time", None)
            if fire is not None and self._fire(ci, oi, lambda fire=fire: fire(now_ms, offset)):
                self.needs_commit = True
        self._drain_late()
        self._forward_watermark()

    def _fire(self, ci: int, oi: int, call: Callable[[], Batch]) -> bool:
        """Run a time callback (closing windows, timers) and its outputs down the chain; a
        failing timer goes to its policy and the callback is called again for the rest."""
        while True:
            try:
                out = call()
                break
            except StepFailed as exc:
                if not exc.retry:
                    raise self._fatal(exc) from exc.cause
                self._fail(exc, False, ci)
                if exc.partial:
                    self._run_chain(ci, oi + 1, exc.partial, False)
        if out:
            self._run_chain(ci, oi + 1, out, False)
        return bool(out)

    def _run(self, batch: Batch, start: int, chain_ids: range | list[int],
             from_input: bool = False) -> None:
        for ci in chain_ids:
            self._run_chain(ci, start, batch, from_input)

    def _run_with_replays(self, batch: Batch, replays: dict[int, str]) -> None:
        """A batch holding dead letters put back by `processor dlq replay`: such a record goes
        only down the chain of the step that failed on it, and writes nothing to the sinks
        before that step — the other pipelines and earlier sinks had it the first time."""
        everything = self._roots
        run: Batch = []
        for record in batch:
            step = replays.get(record[3])
            target = self._chain_of(step) if step is not None else None
            if target is None:
                run.append(record)
                continue
            if run:
                self._run(run, 0, everything, from_input=True)
                run = []
            ci, at = target
            root = self._ancestors[ci][-1] if self._ancestors[ci] else ci
            self._run_chain(root, 0, [record], True, mute=(ci, at))
        if run:
            self._run(run, 0, everything, from_input=True)

    def _chain_of(self, step: str) -> tuple[int, int] | None:
        for ci, chain in enumerate(self.chains):
            for i, op in enumerate(chain):
                if op.name == step or any(o.name == step for o in getattr(op, "ops", ())):
                    return ci, i
        return None  # the topology changed since: treat it as a new record

    def _run_chain(self, ci: int, start: int, batch: Batch, from_input: bool,
                   mute: tuple[int, int] | None = None) -> None:
        """Records through chain `ci` from operator `start`. A record a step fails on goes to
        that step's policy; the step then resumes with the records after it (StepFailed's
        contract), its outputs so far going on first, so order is kept. A chain ending in a
        branch then runs each case's records down that case's chain.

        `mute` = (chain, index) of the step a replayed dead letter failed at: sinks before it
        in that chain, and every sink in the chains above it, already had the record."""
        chain = self.chains[ci]
        mute_before = 0 if mute is None else (
            mute[1] if mute[0] == ci else len(chain) if ci in self._ancestors[mute[0]] else 0)
        children = self._children.get(ci)
        out = batch
        for i in range(start, len(chain)):
            op, pending = chain[i], out
            if i < mute_before and isinstance(op, Sink):
                continue
            while True:
                try:
                    out = op.process(pending)
                    break
                except StepFailed as exc:
                    if exc.index < 0:
                        raise self._fatal(exc) from exc.cause
                    self._fail(exc, from_input and i <= self._first_stateful[ci], ci)
                    if exc.partial:
                        self._run_chain(ci, i + 1, exc.partial, from_input, mute)
                    if children is not None and i == len(chain) - 1:
                        self._route(ci, op.routed, from_input, mute)  # type: ignore[attr-defined]
                    pending = pending[exc.index + 1:]
                    if not pending:
                        return
            if children is not None and i == len(chain) - 1:
                self._route(ci, op.routed, from_input, mute)  # type: ignore[attr-defined]
                return
            if not out:
                return

    def _route(self, ci: int, routed: list[Batch], from_input: bool,
               mute: tuple[int, int] | None) -> None:
        """A branch's cases: each batch down its case's chain (records of a stateful step
        before the branch are derived results, not input records)."""
        from_input = from_input and self._first_stateful[ci] >= len(self.chains[ci])
        children = self._children[ci]
        for case, records in enumerate(routed):
            if records and case in children:
                self._run_chain(children[case], 0, records, from_input, mute)

    # -- failures ------------------------------------------------------------------------------

    def _fatal(self, exc: StepFailed) -> RecordError:
        return RecordError(f"step failed: {exc}", topic=self.topic, partition=self.partition,
                           offset=exc.record[3], step=exc.step)

    def _fail(self, exc: StepFailed, from_input: bool, chain: int) -> None:
        """Apply the step's policy to the record it failed on. A transient cause (the schema
        registry unreachable) is not the record's fault: stop rather than dead-letter."""
        policy = self.policies.get(exc.step, "fail")
        record = exc.record
        if policy == "fail" or getattr(exc.cause, "transient", False):
            raise self._fatal(exc) from exc.cause
        message = self._message_at(record[3]) if from_input else None
        if message is not None:
            self._failed_message(message, exc.step, exc.cause, policy, chain)
            return
        letter = DeadLetter(exc.step, exc.cause, self.topic, self.partition, record[3], record[2],
                            derived_bytes(record[0]), derived_bytes(record[1]), payload="derived")
        self._apply(letter, policy)

    def _fail_message(self, message: Any, exc: Exception) -> None:
        """An input record that could not be decoded (value, key or event time). A transient
        cause (schema registry down) is not the record's fault: stop rather than dead-letter."""
        if self._source_policy == "fail" or getattr(exc, "transient", False):
            raise RecordError(_decode_problem(exc, self._ts_field), topic=self.topic,
                              partition=self.partition, offset=message.offset(),
                              step="source") from exc
        cause = exc if isinstance(exc, ProcessorError) else DeserializationError(
            _decode_problem(exc, self._ts_field))
        self._failed_message(message, "source", cause, self._source_policy, None)

    def _failed_message(self, m: Any, step: str, cause: BaseException, policy: str,
                        chain: int | None) -> None:
        offset = m.offset()
        if policy == "dlq":
            if (offset, chain) in self._dead_letters:
                return  # another record derived from this input failed in this chain too
            self._dead_letters.add((offset, chain))
        upstream = None
        if self._internal:
            try:
                envelope = orjson.loads(m.value())
                upstream = (int(envelope[0]), int(envelope[1]))
            except Exception:
                upstream = None
        letter = DeadLetter(step, cause, self.topic, self.partition, offset, m.timestamp()[1],
                            m.key(), m.value(), list(m.headers() or []), upstream=upstream)
        self._apply(letter, policy)

    def _apply(self, letter: DeadLetter, policy: str) -> None:
        key = (policy, letter.step, letter.error_class)
        self.failures[key] = self.failures.get(key, 0) + 1
        if policy == "dlq" and self._dead_letter is not None:
            self._dead_letter(letter)
        self._failure_log.record(letter, policy, self.id)

    def _message_at(self, offset: int) -> Any:
        msgs = self._messages
        i = bisect_left(msgs, offset, key=_offset_of)
        return msgs[i] if i < len(msgs) and msgs[i].offset() == offset else None

    # -- checkpoint --------------------------------------------------------------------------

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
        upstream, time_state = self.upstream_marks(), self.time_state()
        for name, store in self.stores.items():
            meta: dict[str, int | bytes] = {}
            if self.position is not None:
                meta[META_POSITION] = self.position
            if upstream is not None:
                meta[META_UPSTREAM] = upstream
            if time_state is not None:
                meta[META_TIME] = time_state
            if name in changelog_next:
                meta[META_CHANGELOG_OFFSET] = changelog_next[name]
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
                                       "duplicates_dropped": self.duplicates_dropped})


def _ancestors(ci: int, parents: dict[int, tuple[int, int]]) -> list[int]:
    """The chains above a branch case's chain, nearest first (the root last)."""
    out = []
    while ci in parents:
        ci = parents[ci][0]
        out.append(ci)
    return out


def _decode_problem(exc: Exception, ts_field: str | None) -> str:
    if isinstance(exc, KeyError | TypeError | ValueError) and ts_field and not isinstance(
            exc, ProcessorError | orjson.JSONDecodeError | UnicodeDecodeError):
        return (f"timestamp field {ts_field!r} missing or not a valid time "
                f"({type(exc).__name__}: {exc})")
    return f"cannot decode record ({type(exc).__name__}: {exc})"


def _offset_of(m: Any) -> int:
    return m.offset()


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


class FailureLog:
    """One warning per failure, but at most one line per step every `every_s` seconds when
    records fail in bulk (the DLQ and the metrics hold every one)."""

    def __init__(self, every_s: float = 5.0) -> None:
        self.every_s = every_s
        self._last: dict[str, tuple[float, int]] = {}  # step -> (time of last line, suppressed)

    def record(self, letter: DeadLetter, policy: str, task: str) -> None:
        now = time.monotonic()
        last, suppressed = self._last.get(letter.step, (-1e9, 0))
        if now - last < self.every_s:
            self._last[letter.step] = (last, suppressed + 1)
            return
        self._last[letter.step] = (now, 0)
        log.warning("record failed", extra={
            "task": task, "topic": letter.topic, "partition": letter.partition,
            "offset": letter.offset, "step": letter.step, "policy": policy,
            "error": f"{letter.error_class}: {str(letter.cause)[:500]}",
            "payload": letter.payload, "suppressed_since_last": suppressed})


def _batch_decoder(key_format: str, value_format: str, ts_field: str | None, ts_unit: str,
                   key_decode: Callable[[bytes | None], Any] | None = None,
                   value_decode: Callable[[bytes | None], Any] | None = None,
                   ) -> Callable[[list[Any]], Batch]:
    """One comprehension decoding a whole batch, codecs inlined (no call per key or value)
    for json/string/bytes; schema formats pass their decode functions.
    Event time comes from the value field `ts_field` (epoch ms / s, or ISO-8601) or the record."""
    key = "_kdec(m.key())" if key_decode else inline_decode(key_format, "m.key()", "_k")
    value = "_vdec(m.value())" if value_decode else inline_decode(value_format, "m.value()", "_v")

    if ts_field is None:
        row = f"{key}, {value}, m.timestamp()[1], m.offset()"
    else:
        field = f"_val[{ts_field!r}]"
        ts = {"ms": f"int({field})", "s": f"int({field} * 1000)", "iso": f"_iso({field})"}[ts_unit]
        row = f"{key}, (_val := {value}), {ts}, m.offset()"
    source = f"lambda messages: [({row}) for m in messages]"
    env = {**INLINE_GLOBALS, "_iso": iso_to_ms, "_kdec": key_decode, "_vdec": value_decode}
    return eval(compile_generated(source, f"decode {key_format}/{value_format}", "eval"), env)
