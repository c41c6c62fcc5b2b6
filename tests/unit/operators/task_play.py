"""A task played around one timed operator over a real RocksStore, for the operator tests
that compare with an oracle (windows, patterns): watermarks per batch, on_watermark at batch
ends, checkpoints, and crashes (a dirty close, then a restore from what the store holds)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from processor.state import RocksStore
from processor.timeutil.watermark import Clock, PartitionWatermark


class TaskPlay:
    """`new_operator()` makes the operator under test (it reads `self.clock`)."""

    def __init__(self, path: Path, ooo: int) -> None:
        self.store = RocksStore(path)
        self.ooo = ooo
        self.clock = Clock()
        self.op = self.new_operator()
        self.op.bind(self.store)
        self.wm = PartitionWatermark(ooo)

    def new_operator(self) -> Any:
        raise NotImplementedError

    def feed(self, batch: list[Any], close_at_end: bool) -> list[Any]:
        """One batch as a task runs it: its watermarks, process, then (maybe) on_watermark."""
        before = self.wm.observe([r[2] for r in batch])
        self.clock.set_batch([r[3] for r in batch], before, self.wm.current)
        out = self.op.process(batch)
        if close_at_end:
            out += self.op.on_watermark(self.clock.current, batch[-1][3])
        return out

    def checkpoint(self) -> None:
        emits, writes = self.op.flush()
        assert emits == []
        self.store.apply(writes, {})
        self.op.committed()

    def restore(self, max_ts: int, offset: int, reuse: bool) -> list[Any]:
        """Dirty close, then restore from the store with the checkpointed watermark."""
        self.op.discard()
        if not reuse:
            self.op = self.new_operator()
        self.op.bind(self.store)
        self.wm = PartitionWatermark(self.ooo)
        self.wm.max_ts = max_ts
        self.clock.set_batch([], [], self.wm.current)
        # like the task after a restore: the last offset the state holds
        return self.op.on_watermark(self.wm.current, offset - 1)

    def close(self) -> None:
        self.store.close()


def cut(rng: Any, records: list[Any], share: float) -> tuple[list[list[Any]], list[int]]:
    """`records` in batches (a cut after each record with probability `share`) and, per batch,
    what happens after it: 0 nothing, 1 checkpoint, 2 checkpoint then crash, 3 crash (back to
    the last checkpoint), 4 flush then crash before the writes reach the store."""
    batches: list[list[Any]] = [[]]
    for record in records:
        batches[-1].append(record)
        if rng.random() < share:
            batches.append([])
    batches = [b for b in batches if b]
    return batches, [rng.choice([0, 0, 0, 1, 1, 1, 2, 3, 4]) for _ in batches]
