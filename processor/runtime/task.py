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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from processor.errors import RecordError
from processor.graph import BuildContext, SubTopology
from processor.operators import Batch, StepFailed
from processor.serde import serde_for
from processor.serde.formats import INLINE_GLOBALS, inline_decode
from processor.state import RocksStore, encode_position
from processor.state.store import (
    META_CHANGELOG_OFFSET,
    META_POSITION,
    META_TIME,
    META_UPSTREAM,
)
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
        ctx = dataclasses.replace(ctx, clock=self.clock, source_topic=src.topic)
        self.chains = sub.build_chains(ctx)
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
        self._kdec = serde_for(src.key_format).decode
        self._ts_field = src.timestamp_field
        self._internal = src.internal
        self._decode_fast = _batch_decoder(src.key_format, src.value_format,
                                           self._ts_field, src.timestamp_unit)
        # event time: this partition's watermark, or the minimum over the upstream partitions
        self.watermark: PartitionWatermark | UpstreamWatermarks = (
            UpstreamWatermarks(ctx.partitions_of(src.upstream_topic))
            if src.internal and ctx.partitions_of and src.upstream_topic
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
        # repartition input: upstream partition -> highest (source offset, seq) absorbed
        self.upstream: dict[int, tuple[int, int]] = {}
        self.duplicates_dropped = 0
        self.position: int | None = None  # next input offset to process
        self.committed_position: int | None = None
        self.pending: dict[str, dict[bytes, bytes]] = {}
        self.state = TaskState.RESTORING if self.stores else TaskState.RUNNING

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
        """Repartition records are `[upstream partition, source offset, seq, value]`;
        watermark reports `[upstream partition, watermark | null]`."""
        kdec, marks, loads = self._kdec, self.upstream, orjson.loads
        wm = self.watermark
        out: Batch = []
        offsets: list[int] = []
        before: list[int] = []
        current = wm.current
        for m in messages:
            envelope = loads(m.value())
            if len(envelope) == 2:
                if isinstance(wm, UpstreamWatermarks):
                    current = wm.report(envelope[0], envelope[1])
                continue
            part, off, seq, value = envelope
            mark = (off, seq)
            last = marks.get(part)
            if last is not None and mark <= last:
                self.duplicates_dropped += 1
                continue  # re-sent by an upstream task replaying after a crash
            marks[part] = mark
            out.append((kdec(m.key()), value, m.timestamp()[1], m.offset()))
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
        try:
            batch = self._decode(messages)
        except Exception:
            self._raise_decode_error(messages)
        if self._tracks_time and not self._internal:
            self._observe_time(batch)
        self._last_input = time.monotonic()
        self._idle = False
        self._run(batch, 0, range(len(self.chains)))
        self.position = messages[-1].offset() + 1
        if self._tracks_time:
            self._after_batch(self.position - 1)

    def _after_batch(self, offset: int) -> None:
        """Close what the watermark passed, send late records, forward the watermark."""
        current = self.clock.current
        for ci, oi, op in self.timed:
            out = op.on_watermark(current, offset)
            if out:
                self._run(out, oi + 1, [ci])
        self._drain_late()
        self._forward_watermark()

    def _drain_late(self) -> None:
        for _, _, op in self.timed:
            late = op.late
            if late:
                sink = getattr(op, "late_sink", None)
                if sink is not None:
                    sink(late)
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
            out = fire(now_ms, offset) if fire is not None else None
            if out:
                self.needs_commit = True
                self._run(out, oi + 1, [ci])
        self._drain_late()
        self._forward_watermark()

    def _run(self, batch: Batch, start: int, chain_ids: range | list[int]) -> None:
        for ci in chain_ids:
            out = batch
            for op in self.chains[ci][start:]:
                try:
                    out = op.process(out)
                except StepFailed as exc:
                    raise RecordError(f"step failed: {exc}", topic=self.topic,
                                      partition=self.partition, offset=exc.record[3],
                                      step=exc.step) from exc.cause
                if not out:
                    break

    def _raise_decode_error(self, messages: list[Any]) -> None:
        for m in messages:
            try:
                self._decode([m])
            except Exception as exc:
                what = (f"timestamp field {self._ts_field!r} missing or not a valid time "
                        f"({type(exc).__name__}: {exc})"
                        if isinstance(exc, KeyError | TypeError | ValueError) and self._ts_field
                        else f"cannot decode record ({type(exc).__name__}: {exc})")
                raise RecordError(what, topic=self.topic, partition=self.partition,
                                  offset=m.offset(), step="source") from exc
        raise AssertionError("decode failed for the batch but not for any record")

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
        for store in self.stores.values():
            store.close()
        self.state = TaskState.CLOSED
        log.info("task closed", extra={"task": self.id, "topic": self.topic,
                                       "partition": self.partition, "dirty": dirty,
                                       "offset": self.position,
                                       "duplicates_dropped": self.duplicates_dropped})


def _batch_decoder(key_format: str, value_format: str, ts_field: str | None,
                   ts_unit: str) -> Callable[[list[Any]], Batch]:
    """One comprehension decoding a whole batch, codecs inlined (no call per key or value).
    Event time comes from the value field `ts_field` (epoch ms / s, or ISO-8601) or the record."""
    key = inline_decode(key_format, "m.key()", "_k")
    value = inline_decode(value_format, "m.value()", "_v")
    if ts_field is None:
        row = f"{key}, {value}, m.timestamp()[1], m.offset()"
    else:
        field = f"_val[{ts_field!r}]"
        ts = {"ms": f"int({field})", "s": f"int({field} * 1000)", "iso": f"_iso({field})"}[ts_unit]
        row = f"{key}, (_val := {value}), {ts}, m.offset()"
    source = f"lambda messages: [({row}) for m in messages]"
    env = {**INLINE_GLOBALS, "_iso": iso_to_ms}
    return eval(compile(source, f"<decode {key_format}/{value_format}>", "eval"), env)
