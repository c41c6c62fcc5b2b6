"""Watermarks: how far event time has progressed, per task.

A source partition's watermark is the highest event time seen minus `max_out_of_orderness`.
A task reading a repartition topic receives, in-band, the watermark of every upstream source
partition (runtime/tasks/event_time.py) and takes the minimum over those not marked idle; until every
upstream partition has reported, it holds at NO_WATERMARK. Watermarks never go back.

Operators see the watermark *before each record* (`Clock.watermarks_for`), so whether a record
is late depends only on the records ahead of it in its partition, never on batch boundaries:
a replay after a crash makes the same decisions as the original run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

NO_WATERMARK = -(1 << 62)
"""Watermark before any event time is known: every window stays open."""

END_OF_TIME = 1 << 62
"""Watermark of an input that reached its end (a bounded run): every window and timer closes."""


class Clock:
    """The event-time view a task hands its operators for the batch being processed.

    `offsets[i]` is the input offset of the i-th record of the batch, `before[i]` the watermark
    in force when it arrived; `current` is the watermark after the whole batch.
    """

    def __init__(self) -> None:
        self.offsets: list[int] = []
        self.before: list[int] = []
        self.current = NO_WATERMARK

    def set_batch(self, offsets: list[int], before: list[int], current: int) -> None:
        self.offsets, self.before, self.current = offsets, before, current

    def advance(self, watermark: int) -> None:
        """A watermark change outside a batch (idle upstream, restore)."""
        self.offsets, self.before = [], []
        self.current = max(self.current, watermark)

    def watermarks_for(self, batch: Sequence[tuple[Any, Any, int, int]]) -> list[int]:
        """The watermark before each record of `batch` (records in input-offset order; records
        derived from one input record share its offset)."""
        offs, before, current = self.offsets, self.before, self.current
        n, i = len(offs), 0
        out = []
        append = out.append
        for record in batch:
            o = record[3]
            while i < n and offs[i] < o:
                i += 1
            append(before[i] if i < n else current)
        return out


class PartitionWatermark:
    """Watermark of one source partition: max event time seen - max_out_of_orderness."""

    def __init__(self, max_out_of_orderness_ms: int) -> None:
        self.delay = max_out_of_orderness_ms
        self.max_ts = NO_WATERMARK

    @property
    def current(self) -> int:
        return NO_WATERMARK if self.max_ts == NO_WATERMARK else self.max_ts - self.delay

    def observe(self, timestamps: Sequence[int]) -> list[int]:
        """Absorb a batch's event times; returns the watermark before each of them."""
        delay, m = self.delay, self.max_ts
        before = []
        append = before.append
        for t in timestamps:
            append(m - delay if m != NO_WATERMARK else NO_WATERMARK)
            if t > m:
                m = t
        self.max_ts = m
        return before

    def advance_to(self, watermark: int) -> None:
        """Event time reached `watermark` without a record: as if one with event time
        `watermark + max_out_of_orderness` had been seen (never backwards)."""
        self.max_ts = max(self.max_ts, watermark + self.delay)

    def state(self) -> dict[str, Any]:
        return {"max_ts": self.max_ts}

    def restore(self, state: dict[str, Any]) -> None:
        self.max_ts = max(self.max_ts, int(state.get("max_ts", NO_WATERMARK)))


class UpstreamWatermarks:
    """Watermark of a task fed by `upstream` partitions through a repartition topic.

    Each upstream partition reports its watermark, or that it is idle (no input for its source's
    `idle_timeout`). The task's watermark is the minimum over the reporting, non-idle partitions
    (the maximum reported once all are idle, so the order in which they went idle does not
    matter); an upstream partition never heard from holds it back: its records may still come.
    """

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.marks: dict[int, int] = {}
        self.idle: set[int] = set()
        self.current = NO_WATERMARK

    def report(self, partition: int, watermark: int | None) -> int:
        """Apply one in-band report (None = idle); returns the task watermark after it."""
        if watermark is None:
            self.idle.add(partition)
        else:
            self.idle.discard(partition)
            if watermark > self.marks.get(partition, NO_WATERMARK):
                self.marks[partition] = watermark
        active = [self.marks.get(p, NO_WATERMARK) for p in range(self.upstream)
                  if p not in self.idle]
        if active:
            self.current = max(self.current, min(active))
        elif self.marks:
            # every upstream partition idle: none holds the others back any more, whichever
            # went idle last (as Flink's watermark valve does); a silent partition that wakes
            # up behind this point sends late records, as under any idle_timeout
            self.current = max(self.current, max(self.marks.values()))
        return self.current

    @property
    def all_idle(self) -> bool:
        return len(self.idle) >= self.upstream

    def state(self) -> dict[str, Any]:
        return {"marks": {str(p): w for p, w in self.marks.items()}, "idle": sorted(self.idle),
                "current": self.current}

    def restore(self, state: dict[str, Any]) -> None:
        for p, w in state.get("marks", {}).items():
            self.marks[int(p)] = max(self.marks.get(int(p), NO_WATERMARK), int(w))
        self.idle = set(state.get("idle", []))
        self.current = max(self.current, int(state.get("current", NO_WATERMARK)))
