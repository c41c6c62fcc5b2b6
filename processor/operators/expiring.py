"""The loop and lifecycle shared by the steps whose state is a set of expiring entries per key
over a store (the interval join's buffered records, reconcile's open groups): records in input
order, each one after the expiries the watermark in force before it made due, so that a replay
gives the same sequence; binding, flushing, trimming and discarding go to the state object."""

from __future__ import annotations

from typing import Any, Protocol

from processor.operators.base import (
    CACHED_ENTRY_BYTES,
    Batch,
    Record,
    TimedOperator,
    Writes,
    failed_at,
)
from processor.operators.expiry_index import ExpiryIndex
from processor.timeutil.watermark import Clock


class ExpiringEntries(Protocol):
    """What the operator needs from its state object (interval_state.py, reconcile_state.py)."""

    def bind(self, store: Any) -> None: ...
    def index(self) -> ExpiryIndex: ...
    def flush(self) -> Writes: ...
    def committed(self) -> None: ...
    def cached_count(self) -> int: ...
    def trim(self) -> None: ...
    def reset(self) -> None: ...
    def pending(self) -> int: ...


class ExpiringStateOperator(TimedOperator):
    """Subclasses set `state` and `name` and implement `_record` and `_expire`."""

    name: str
    clock: Clock  # the task's event-time view: per-record watermarks
    state: ExpiringEntries
    store: Any = None
    skip_below: int = -1
    _last_offset: int = -1  # the last input offset processed: expiries before a record carry it

    def _record(self, record: Record, wm: int, out: Batch) -> None:
        """Take one record under watermark `wm` (raise before any change to fail it alone)."""
        raise NotImplementedError

    def _expire(self, watermark: int, offset: int, out: Batch) -> None:
        """Act on every entry whose expiry is <= watermark; emissions carry `offset`."""
        raise NotImplementedError

    def process(self, batch: Batch) -> Batch:
        out: Batch = []
        if not batch:
            return out
        marks = self.clock.watermarks_for(batch)
        index, skip, one = self.state.index(), self.skip_below, self._record
        prev = self._last_offset
        record: Record
        for record, wm in zip(batch, marks, strict=True):
            o = record[3]
            if o < skip:
                prev = o
                continue  # already reflected in the restored store
            if index.due() <= wm:
                self._expire(wm, prev if prev >= 0 else o - 1, out)
            try:
                one(record, wm, out)
            except Exception as exc:
                self._last_offset = prev  # emissions and state changes before the raise stay
                raise failed_at(self.name, batch, record, exc, out) from exc
            prev = o
        self._last_offset = prev
        return out

    def on_watermark(self, watermark: int, offset: int) -> Batch:
        out: Batch = []
        if self.state.index().due() <= watermark:
            self._expire(watermark, offset, out)
        self._last_offset = max(self._last_offset, offset)
        return out

    def bind(self, store: Any, skip_below: int = -1) -> None:
        self.store, self.skip_below = store, skip_below
        self.state.bind(store)

    def flush(self) -> tuple[Batch, Writes]:
        return [], self.state.flush()

    def committed(self) -> None:
        self.state.committed()

    def cache_bytes(self) -> int:
        return self.state.cached_count() * CACHED_ENTRY_BYTES

    def trim_cache(self) -> None:
        self.state.trim()

    def discard(self) -> None:
        self.state.reset()
        self._last_offset = -1

    def pending(self) -> dict[str, int]:
        return {} if self.store is None else {"event_time timers": self.state.pending()}
