"""A task: one sub-topology running over one input partition, with its stores.

Lifecycle: RESTORING (stores catch up from their changelogs; input paused) -> RUNNING ->
closed clean (after a checkpoint) or dirty (uncommitted work discarded). The task never
talks to Kafka itself: the worker hands it messages, the checkpoint takes its pending
writes, and emitters passed in at build time produce its outputs.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from processor.errors import RecordError
from processor.graph import BuildContext, SubTopology
from processor.operators import Aggregate, Batch, StepFailed
from processor.serde import serde_for
from processor.serde.formats import INLINE_GLOBALS, inline_decode
from processor.state import RocksStore
from processor.state.store import META_CHANGELOG_OFFSET, META_POSITION, META_UPSTREAM

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
        self.topic = sub.source.topic
        self.partition = partition
        self.id = f"{sub.id}_{partition}"
        self.chains = sub.build_chains(ctx)
        self.aggregates: list[tuple[int, int, Aggregate]] = [
            (ci, oi, op) for ci, chain in enumerate(self.chains)
            for oi, op in enumerate(chain) if isinstance(op, Aggregate)
        ]
        self.stores: dict[str, RocksStore] = {
            agg.store_name: RocksStore(state_dir / topology / agg.store_name / str(partition))
            for _, _, agg in self.aggregates
        }
        self.changelogs = {s.name: s.changelog_topic for s in sub.stores}
        self._kdec = serde_for(sub.source.key_format).decode
        self._ts_field = sub.source.timestamp_field
        self._ts_scale = 1000 if sub.source.timestamp_unit == "s" else 1
        self._internal = sub.source.internal
        self._decode_fast = _batch_decoder(sub.source.key_format, sub.source.value_format,
                                           self._ts_field, self._ts_scale)
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
        """Stores are caught up: bind aggregates, skipping input each store already holds."""
        marks: dict[int, tuple[int, int]] | None = None
        for _, _, agg in self.aggregates:
            store = self.stores[agg.store_name]
            pos = store.position
            agg.bind(store, skip_below=-1 if pos is None else pos)
            raw = store.upstream
            if raw is not None:
                theirs = {int(p): (m[0], m[1]) for p, m in orjson.loads(raw).items()}
                # stores of one task are checkpointed together; if a crash split them,
                # the lower marks re-admit what the lagging store still needs
                marks = theirs if marks is None else {
                    p: min(m, theirs.get(p, m)) for p, m in marks.items()}
        self.upstream = marks or {}
        self.state = TaskState.RUNNING

    def upstream_marks(self) -> bytes | None:
        if not self._internal:
            return None
        return orjson.dumps({str(p): list(m) for p, m in self.upstream.items()})

    # -- processing -------------------------------------------------------------------------

    def _decode(self, messages: list[Any]) -> Batch:
        if self._internal:
            return self._decode_envelopes(messages)
        return self._decode_fast(messages)

    def _decode_envelopes(self, messages: list[Any]) -> Batch:
        """Repartition records are `[upstream partition, source offset, seq, value]`."""
        kdec, marks, loads = self._kdec, self.upstream, orjson.loads
        out: Batch = []
        for m in messages:
            part, off, seq, value = loads(m.value())
            mark = (off, seq)
            last = marks.get(part)
            if last is not None and mark <= last:
                self.duplicates_dropped += 1
                continue  # re-sent by an upstream task replaying after a crash
            marks[part] = mark
            out.append((kdec(m.key()), value, m.timestamp()[1], m.offset()))
        return out

    def process(self, messages: list[Any]) -> None:
        try:
            batch = self._decode(messages)
        except Exception:
            self._raise_decode_error(messages)
        self._run(batch, 0, range(len(self.chains)))
        self.position = messages[-1].offset() + 1

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
                what = (f"timestamp field {self._ts_field!r} missing or not a number"
                        if isinstance(exc, KeyError | TypeError) and self._ts_field
                        else f"cannot decode record ({type(exc).__name__}: {exc})")
                raise RecordError(what, topic=self.topic, partition=self.partition,
                                  offset=m.offset(), step="source") from exc
        raise AssertionError("decode failed for the batch but not for any record")

    # -- checkpoint --------------------------------------------------------------------------

    def flush(self) -> None:
        """Emit cached aggregate results downstream and stage their changelog writes."""
        for ci, oi, agg in self.aggregates:
            emits, writes = agg.flush()
            if writes:
                self.pending.setdefault(agg.store_name, {}).update(writes)
            if emits:
                self._run(emits, oi + 1, [ci])

    @property
    def has_progress(self) -> bool:
        return self.position is not None and self.position != self.committed_position

    def committed(self, changelog_next: dict[str, int]) -> None:
        """The transaction (or flush + offset commit) succeeded: write the stores atomically."""
        upstream = self.upstream_marks()
        for name, store in self.stores.items():
            meta: dict[str, int | bytes] = {}
            if self.position is not None:
                meta[META_POSITION] = self.position
            if upstream is not None:
                meta[META_UPSTREAM] = upstream
            if name in changelog_next:
                meta[META_CHANGELOG_OFFSET] = changelog_next[name]
            store.apply(self.pending.get(name, {}), meta)
        self.pending = {}
        for _, _, agg in self.aggregates:
            agg.committed()
        self.committed_position = self.position

    def close(self, *, dirty: bool) -> None:
        if dirty:
            for _, _, agg in self.aggregates:
                agg.discard()
            self.pending = {}
        for store in self.stores.values():
            store.close()
        self.state = TaskState.CLOSED
        log.info("task closed", extra={"task": self.id, "topic": self.topic,
                                       "partition": self.partition, "dirty": dirty,
                                       "offset": self.position,
                                       "duplicates_dropped": self.duplicates_dropped})


def _batch_decoder(key_format: str, value_format: str, ts_field: str | None,
                   ts_scale: int) -> Callable[[list[Any]], Batch]:
    """One comprehension decoding a whole batch, codecs inlined (no call per key or value).
    Event time comes from the value field `ts_field` (times `ts_scale`) or the record."""
    key = inline_decode(key_format, "m.key()", "_k")
    value = inline_decode(value_format, "m.value()", "_v")
    if ts_field is None:
        row = f"{key}, {value}, m.timestamp()[1], m.offset()"
    else:
        row = f"{key}, (_val := {value}), int(_val[{ts_field!r}] * {ts_scale}), m.offset()"
    source = f"lambda messages: [({row}) for m in messages]"
    return eval(compile(source, f"<decode {key_format}/{value_format}>", "eval"), dict(INLINE_GLOBALS))
