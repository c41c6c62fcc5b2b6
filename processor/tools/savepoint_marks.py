"""Upstream marks across a same-count restore when a repartition topic is fed by a task that
itself reads a repartition topic (a chain: key_by, a stateful step, key_by again).

A repartition record carries `[slot, offset, seq, value]` where `offset` is the record's offset
*in the feeding task's input* (runtime/kafka/collector.py). For a feeder reading a source topic
that offset survives a restore (same topic, same offsets); for a feeder reading a repartition
topic it does not: the restore re-produces that topic's in-flight records into the new
application's topic at new offsets, and the feeder's future records carry those. Left in the
old offset space, the downstream reader's marks (and the offsets inside its own in-flight
records) would be higher than everything the feeder sends after the restore, and its records
would be dropped as duplicates.

So every such offset is carried into the new offset space by one order-keeping map per feeder
input partition: an in-flight (re-produced) record's old offset goes to its new one; an older
offset (a record before the feeder's position, never re-sent) to a distinct offset below the
first new one, keeping their order.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

OffsetMap = Callable[[int], int]


def offset_map(from_old: int, sent: Sequence[tuple[int, int]], end_new: int) -> OffsetMap:
    """Old -> new offsets of one repartition partition: `from_old` where its in-flight records
    started, `sent` their (old, new) offsets in order, `end_new` the new topic's end (where the
    first new record goes when nothing was in flight)."""
    first_old, first_new = (sent[0] if sent else (from_old, end_new))
    olds = [o for o, _ in sent]

    def new(o: int) -> int:
        i = bisect.bisect_right(olds, o) - 1
        if i < 0:  # before the feeder's position: below everything it sends from now on
            return first_new - max(1, first_old - o)
        return sent[i][1]
    return new


class SlotOffsets:
    """For one repartition reader: the offset maps of the slots whose feeder reads a repartition
    topic (slot numbering as runtime/kafka/collector.py: feeders' partitions one after another)."""

    def __init__(self, maps: Mapping[int, OffsetMap]) -> None:
        self.maps = dict(maps)

    @classmethod
    def for_reader(cls, feeders: Sequence[tuple[int, Mapping[int, OffsetMap] | None]]
                   ) -> SlotOffsets:
        """`feeders`: per feeder topic in order, its partition count and, for a repartition
        topic, its offset map per partition (None for a source topic: offsets unchanged)."""
        maps: dict[int, OffsetMap] = {}
        base = 0
        for count, per_partition in feeders:
            if per_partition is not None:
                maps.update({base + p: m for p, m in per_partition.items()})
            base += count
        return cls(maps)

    def __bool__(self) -> bool:
        return bool(self.maps)

    def marks(self, upstream: Mapping[str, Sequence[int]]) -> dict[str, list[int]]:
        """A position record's `upstream` marks {slot: [offset, seq]} in the new offset space."""
        out = {}
        for slot, (offset, seq) in upstream.items():
            m = self.maps.get(int(slot))
            out[slot] = [m(offset) if m else offset, seq]
        return out

    def envelope(self, value: bytes | None) -> bytes | None:
        """An in-flight record's envelope with its offset in the new space (watermark reports,
        `[slot, watermark]`, and records of unchanged slots pass as they are)."""
        if value is None:
            return value
        env: list[Any] = orjson.loads(value)
        m = self.maps.get(int(env[0])) if len(env) >= 4 else None
        if m is None:
            return value
        env[1] = m(int(env[1]))
        return orjson.dumps(env)
