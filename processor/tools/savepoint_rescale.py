"""Rescaling a savepoint's state: from N partitions to M, by Kafka's partitioner (pure, no broker).

State: every store entry goes to `partition_for(key, M)`, the key read from the store key by
its operator's layout (`StoreKeys` next to each operator); per-partition bookkeeping entries
(a window store's `M`) are merged. Before anything is written, every entry must sit in the
partition `partition_for(key, N)` names (`plan_store`): a store fed by producers that do not
partition by murmur2 of the same key bytes would otherwise have its state split from its
records.

In-flight repartition records go to the partition of their key in the new count. Their
envelopes `[slot, source offset, seq, value]` get a *retired* slot, negative and unique per
(old partition, old slot): the new reader's marks for it start at the old reader's (so a copy
it would have dropped is dropped), each retired slot's records come from one old partition in
their order, and no record written after the cut can collide with them, whatever happened to
the feeder's offsets (a re-created topic, a new repartition topic). In-band watermark reports
are dropped. The live slots' marks start empty: records after the cut carry later source
offsets (a rescaled source was read to its end), or come from partitions new to the reader.

Event time: a new partition's watermark state is the minimum over the old partitions merged
into it (those whose entries or in-flight records it receives, and its own number's), so no
window closes early; a repartition reader keeps per-slot watermarks only for slots that still
exist (a new slot is "never heard from" until it reports). A record later than its old
partition's watermark but not later than the merged minimum is therefore accepted instead of
being dropped as late (and may re-open a window its old partition had already closed).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from processor.graph.layout import StoreLayout
from processor.operators import aggregate, interval_state, process, reconcile_state
from processor.operators.base import KeyFamilyError, StoreKeys
from processor.operators.windows import count, fixed, keyed
from processor.state.partitioner import partition_for
from processor.timeutil.watermark import NO_WATERMARK
from processor.tools.savepoint_format import SavepointError

Entries = Callable[[str, int], Iterator[tuple[bytes, bytes | None]]]
"""(store, old partition) -> the savepoint's entries of that store partition."""

_WINDOW_KEYS = {"tumbling": fixed.STORE_KEYS, "hopping": fixed.STORE_KEYS,
                "sliding": keyed.STORE_KEYS, "session": keyed.STORE_KEYS,
                "count": count.STORE_KEYS}
_OPERATOR_KEYS = {"aggregate": aggregate.STORE_KEYS, "process": process.STORE_KEYS,
                  "interval_join": interval_state.STORE_KEYS, "reconcile": reconcile_state.STORE_KEYS,
                  "pattern": keyed.STORE_KEYS}


def store_keys(layout: StoreLayout) -> StoreKeys:
    """The key layout of a store's operator; a store rescaling does not know is refused."""
    op = layout.operator
    found = (_WINDOW_KEYS.get(layout.facts.get("window", {}).get("kind", "")) if op == "window"
             else _OPERATOR_KEYS.get(op))
    if found is None:
        raise SavepointError(f"store {layout.store!r} (operator {op}): its key layout is unknown "
                             "to rescaling, which cannot move its entries by key")
    return found


def readable(key: bytes) -> str:
    try:
        text = key.decode()
    except UnicodeDecodeError:
        return "0x" + key.hex()
    return repr(text) if text.isprintable() else "0x" + key.hex()


@dataclass
class StoreMove:
    """Where one store's entries go: `sources[q]` the old partitions giving new partition q
    entries; `bookkeeping` the per-partition entries to merge, by store key."""

    layout: StoreLayout
    keys: StoreKeys
    old: int
    new: int
    sources: dict[int, set[int]] = field(default_factory=dict)
    bookkeeping: dict[bytes, list[bytes]] = field(default_factory=dict)

    def _key(self, store_key: bytes, partition: int) -> bytes | None:
        try:
            return self.keys.record_key(store_key)
        except KeyFamilyError as exc:
            raise SavepointError(
                f"store {self.layout.store!r} (operator {self.layout.operator}) partition "
                f"{partition}: entry {readable(store_key)} is of no key family of its layout "
                f"({self.keys.families}): {exc}") from None

    def moved(self, entries: Entries) -> Iterator[tuple[int, bytes, bytes | None]]:
        """(new partition, store key, value) of every entry, then the merged bookkeeping in
        every new partition (absent ones dropped: nothing held them). A store keeping its
        partition count keeps every entry where it is."""
        for p in range(self.old):
            for k, v in entries(self.layout.store, p):
                if self.old == self.new:
                    yield p, k, v
                    continue
                rk = self._key(k, p)
                if rk is not None:
                    yield partition_for(rk, self.new), k, v
        for k, values in self.bookkeeping.items():
            merged = self.keys.merge(k, values)
            if merged is not None:
                for q in range(self.new):
                    yield q, k, merged


def plan_store(layout: StoreLayout, old: int, new: int, entries: Entries) -> StoreMove:
    """Check that every entry sits where Kafka's partitioner puts its key among `old`
    partitions; note which old partitions feed which new ones. Nothing is written."""
    move = StoreMove(layout, store_keys(layout), old, new)
    if old == new:  # entries stay where they are, whatever partitioned them
        move.sources = {p: {p} for p in range(old)}
        return move
    for p in range(old):
        for k, v in entries(layout.store, p):
            rk = move._key(k, p)
            if rk is None:
                if v is not None:
                    move.bookkeeping.setdefault(k, []).append(v)
                continue
            want = partition_for(rk, old)
            if want != p:
                raise SavepointError(
                    f"store {layout.store!r} (operator {layout.operator}) partition {p} holds key "
                    f"{readable(rk)}, which Kafka's default partitioner (murmur2 of the key bytes "
                    f"over {old} partitions) puts in partition {want}: the records feeding this "
                    "store were not partitioned by murmur2 of the same key bytes (a custom "
                    "partitioner, or keys whose bytes differ from the store's, e.g. non-compact "
                    "JSON or schema-encoded keys). Rescaling would move the key's state to the "
                    "partition murmur2 names, apart from the partition its producer sends its "
                    "records to: refused")
            move.sources.setdefault(partition_for(rk, new), set()).add(p)
    return move


@dataclass(frozen=True)
class Slots:
    """A repartition topic's upstream slots: its feeder topics' partitions, numbered in feeder
    order (runtime/kafka/collector.py `slot`)."""

    feeders: tuple[tuple[str, int], ...]  # (topic, partition count) in feeder order

    @property
    def total(self) -> int:
        return sum(n for _, n in self.feeders)

    def locate(self, slot: int) -> tuple[int, int] | None:
        """(feeder index, partition) of a slot; None when out of range."""
        for i, (_, n) in enumerate(self.feeders):
            if 0 <= slot < n:
                return i, slot
            slot -= n
        return None

    def number(self, feeder: int, partition: int) -> int | None:
        """The slot of a feeder's partition; None when the feeder has no such partition."""
        if partition >= self.feeders[feeder][1]:
            return None
        return sum(n for _, n in self.feeders[:feeder]) + partition


def retired_slot(old_partition: int, old_slot: int, old_total: int) -> int:
    """The slot an in-flight record of an old repartition partition is re-produced under:
    negative (no live slot is) and unique per (old partition, old slot)."""
    return -1 - (old_partition * max(old_total, 1) + old_slot)


@dataclass
class InflightMove:
    """A repartition topic's in-flight records in the new partition count."""

    records: dict[int, list[tuple[bytes | None, bytes, int]]]  # q -> (key, envelope, ts), in order
    sources: dict[int, set[int]]  # q -> old partitions giving it records
    retired: dict[int, dict[int, tuple[int, int]]]  # q -> retired slot -> (old partition, old slot)
    reports_dropped: int


def redistribute_inflight(lines: dict[int, list[dict[str, Any]]], new: int, old_total: int,
                          decode_key: Callable[[dict[str, Any]], bytes | None],
                          decode_value: Callable[[dict[str, Any]], bytes | None]) -> InflightMove:
    """Each in-flight record to the partition of its key among `new` (a null key: old
    partition modulo `new`), under its retired slot; per new partition the old partitions'
    records are interleaved by timestamp, each old partition's in its order."""
    streams: dict[int, list[list[tuple[int, int, bytes | None, bytes]]]] = {}
    sources: dict[int, set[int]] = {}
    retired: dict[int, dict[int, tuple[int, int]]] = {}
    dropped = 0
    for p, part_lines in sorted(lines.items()):
        per_q: dict[int, list[tuple[int, int, bytes | None, bytes]]] = {}
        for n, line in enumerate(part_lines):
            raw = decode_value(line)
            envelope = orjson.loads(raw) if raw is not None else None
            if not isinstance(envelope, list) or len(envelope) < 4:
                dropped += 1  # a watermark report `[slot, watermark]`: the reader resets them
                continue
            key = decode_key(line)
            q = p % new if key is None else partition_for(key, new)
            old_slot = int(envelope[0])
            envelope[0] = slot = retired_slot(p, old_slot, old_total)
            per_q.setdefault(q, []).append((int(line.get("timestamp") or 0), n, key,
                                           orjson.dumps(envelope)))
            sources.setdefault(q, set()).add(p)
            retired.setdefault(q, {})[slot] = (p, old_slot)
        for q, recs in per_q.items():
            streams.setdefault(q, []).append(recs)
    records = {q: [(key, value, ts) for ts, _, key, value in
                   heapq.merge(*parts, key=lambda r: r[0])]
               for q, parts in streams.items()}
    return InflightMove(records, sources, retired, dropped)


def retired_marks(retired: dict[int, tuple[int, int]],
                  old_marks: dict[int, dict[str, Any]]) -> dict[str, list[int]]:
    """The reader's starting marks for the retired slots: the old reader's for that slot, so
    an in-flight copy it would have dropped (a replay's) is dropped."""
    out = {}
    for slot, (p, s) in sorted(retired.items()):
        mark = old_marks.get(p, {}).get(str(s))
        if mark is not None:
            out[str(slot)] = list(mark)
    return out


def merged_source_time(states: list[dict[str, Any] | None]) -> dict[str, Any]:
    """A source partition's watermark state made from several: the lowest."""
    return {"max_ts": min((int(s.get("max_ts", NO_WATERMARK)) if s else NO_WATERMARK)
                          for s in states)}


def merged_upstream_time(states: list[dict[str, Any] | None], old: Slots,
                         new: Slots) -> dict[str, Any]:
    """A repartition reader's watermark state made from several: per slot that still exists
    the lowest mark (set only when every merged state had one), the lowest current; idle
    flags and slots that no longer exist are dropped (they report again)."""
    known = [s or {} for s in states]
    marks: dict[str, int] = {}
    for slot in range(old.total):
        where = old.locate(slot)
        assert where is not None
        now = new.number(*where)
        seen = [st.get("marks", {}).get(str(slot)) for st in known]
        if now is not None and seen and all(m is not None for m in seen):
            marks[str(now)] = min(int(m) for m in seen if m is not None)
    current = min(int(st.get("current", NO_WATERMARK)) for st in known) if known else NO_WATERMARK
    return {"marks": marks, "idle": [], "current": current}
