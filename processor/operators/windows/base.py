"""What every window operator shares: the lifecycle, late bookkeeping and closing by end time.

Store layout (one RocksStore per window step and partition; values are orjson):

    W <pack_ts(end)> <pack_ts(start)> <key>  -> accumulator       tumbling, hopping
    K <key>                                  -> the key's state   session, sliding
    E <pack_ts(end)> <key>                   -> b""               session, sliding: the earliest
                                                                  end among the key's windows
                                                                  and buffer (see keyed.py)
    C <key>                                  -> [n, windows]      count
    M                                        -> largest end ever written under W or E

`end` is a window's exclusive end; a window closes once watermark >= end + allowed_lateness,
i.e. at bound = watermark - allowed_lateness every window with end <= bound closes. Time-ordered
families start with the packed end, so "what ends by `bound`" is one range scan.

Lifecycle (the same contract as `Aggregate`): the operator only reads the store. Changes live
in a read-through cache; flush() turns the changes since the last flush into changelog writes
(None = delete); the task applies them after the Kafka commit and calls committed(), which may
trim the cache; discard() forgets everything uncommitted. A window created and closed between
two flushes writes nothing.

Closing does not scan everything. The cache keeps an index of open windows by end (a heap of
ends plus buckets), so a pass pops only what is due, and it runs only when the watermark
reaches `next_close`. The store needs scanning only for windows the cache does not hold, which
exist only after a restore or a cache trim: `so_next` is a lower bound of their ends (scan once
the bound reaches it, from the last bound on, one seek), `so_max` an upper bound (the persisted
M): beyond it the cache holds everything, so no scans and no read-through lookups are needed.

A window closed before record i (its watermark passed the window) is emitted with the offset
of the record before it, i - 1: the input that moved the watermark, whatever the batch
boundaries; on_watermark at a batch end uses the last offset of the batch, the same value.
Within one closing pass, windows are emitted in (end, start, key bytes) order, whether they
came from the cache or the store, so a replay after a crash emits exactly what the original
run did.
"""

from __future__ import annotations

from collections.abc import Callable
from heapq import heappop, heappush
from operator import itemgetter
from typing import Any

import orjson

from processor.operators.aggregate import CompiledAggregation
from processor.operators.base import (
    CACHED_ENTRY_BYTES,
    Batch,
    KeyFamilyError,
    LateRecord,
    Queryable,
    Record,
    StepFailed,
    TimedOperator,
    failed_at,
)
from processor.state.keys import pack_ts, unpack_ts
from processor.timeutil.watermark import Clock

INF = 1 << 64  # no such end: beyond every packable time
NEG = -(1 << 64)
_MIN_TS = -(1 << 63)
MAX_END = b"M"
_BY_WINDOW = itemgetter(0, 1, 2)  # closing tuples (end, start, key bytes, key, acc)


def merge_max_end(store_key: bytes, values: list[bytes]) -> bytes | None:
    """`M` of a partition made from several: the largest of theirs (an upper bound of the
    ends of every window the merged store holds, which is all `M` promises)."""
    if store_key != MAX_END:
        raise KeyFamilyError(f"{store_key!r} is not a window bookkeeping entry")
    return orjson.dumps(max(orjson.loads(v) for v in values)) if values else None


def fresh_state(agg: CompiledAggregation) -> Callable[[], list[Any]]:
    """A fast new-accumulator factory: a shallow copy when the initial slots are immutable."""
    init = agg.initial
    if all(x is None or isinstance(x, bool | int | float | str) for x in init):
        return init.copy
    return agg.new_state


class WindowOperator(TimedOperator, Queryable):
    """Base of the window operators: construction, bind/discard and the late list.

    `late` holds (record, window_start, window_end, watermark before it) for every record no
    open window could take; the task drains it. `late_count` and `windows_closed` only grow.
    """

    def __init__(self, name: str, store_name: str, spec: Any, agg: CompiledAggregation,
                 key_encode: Callable[[Any], bytes | None], key_decode: Callable[[bytes], Any],
                 clock: Clock, cache_max_entries: int = 100_000) -> None:
        self.name = name
        self.store_name = store_name
        self.agg = agg
        self.update = agg.update
        self.result = agg.result
        self.fresh = fresh_state(agg)
        self.key_encode = key_encode
        self.key_decode = key_decode
        self.clock = clock
        self.lateness: int = spec.allowed_lateness
        self.final = spec.emit == "final"
        self.cache_max_entries = cache_max_entries
        self.late: list[LateRecord] = []
        self.late_count = 0
        self.windows_closed = 0
        self.store: Any = None
        self.skip_below = -1
        self._reset()

    def bind(self, store: Any, skip_below: int = -1) -> None:
        """Attach the (restored) store; input offsets below `skip_below` are already in it."""
        self.store = store
        self.skip_below = skip_below
        self._reset()
        self._restore()

    def discard(self) -> None:
        """Forget uncommitted work (dirty close): continue from what the store holds."""
        self._reset()
        self.late.clear()
        if self.store is not None:
            self._restore()

    def on_watermark(self, watermark: int, offset: int) -> Batch:
        return []

    def pending(self) -> dict[str, int]:
        lo, hi = self._open_range()
        return {"windows": sum(1 for _ in self.store.range(lo, hi))} if self.store else {}

    def _open_range(self) -> tuple[bytes, bytes]:
        """The store family holding one entry per open window."""
        raise NotImplementedError

    def _reset(self) -> None:
        raise NotImplementedError

    def _restore(self) -> None:
        pass

    @staticmethod
    def _no_key() -> None:
        raise ValueError("record key is null; a window needs a key (use key_by)")

    def _failed(self, record: Record | None, exc: Exception, offset: int = -1, *,
                batch: Batch | None = None, out: Batch | None = None) -> StepFailed:
        """Per-record failures are resumable (`failed_at`); closing failures are not."""
        if batch is not None and record is not None:
            return failed_at(self.name, batch, record, exc, out or [])
        return StepFailed(self.name, record if record is not None else (None, None, 0, offset), exc)


class EndIndexed(WindowOperator):
    """Time windows: the in-memory index by end and the closing pass over cache and store.

    Subclasses implement `_close(bound, offset, out)` on top of `_due(bound)`, `_cached()`,
    `_trim()` and `flush()`.
    """

    prefix = b""  # the end-ordered store family scanned when closing
    prefix_end = b""

    def _open_range(self) -> tuple[bytes, bytes]:
        return self.prefix, self.prefix_end
    end_shift = 0  # reported window_end = internal end - end_shift (sliding windows: 1)
    rescan = 1  # the store scan starts at closed_through + rescan (0: an end can equal it later)

    def _reset(self) -> None:
        self.buckets: dict[int, dict[bytes, Any]] = {}  # end -> {key bytes: entry}
        self.heap: list[int] = []  # the ends of `buckets`
        self.closed_through = NEG  # every window with end <= this is closed
        self.so_next = INF  # lower bound of the ends of store-only windows (> closed_through)
        self.so_max = NEG  # upper bound of the ends of store-only windows
        self.next_close = INF  # watermark at which the next closing pass is due
        self.max_persisted = NEG  # largest end written (the M entry)
        self.writes: dict[bytes, bytes | None] = {}  # changelog writes not flushed yet
        self.dirty: list[Any] = []

    def _restore(self) -> None:
        raw = self.store.get(MAX_END)
        if raw is not None:  # the store may hold open windows: scan at the first pass
            self.max_persisted = self.so_max = orjson.loads(raw)
            self.so_next = self.next_close = NEG

    def on_watermark(self, watermark: int, offset: int) -> Batch:
        out: Batch = []
        if watermark >= self.next_close:
            try:
                self._close(watermark - self.lateness, offset, out)
            except Exception as exc:
                raise self._failed(None, exc, offset) from exc
        return out

    def _bucket(self, end: int) -> dict[bytes, Any]:
        bucket: dict[bytes, Any] = {}
        self.buckets[end] = bucket
        heappush(self.heap, end)
        if end + self.lateness < self.next_close:
            self.next_close = end + self.lateness
        return bucket

    def _due(self, bound: int) -> tuple[dict[int, dict[bytes, Any]], list[tuple[int, bytes, bytes]]]:
        """Pop the cached buckets with end <= bound; scan the store if it may hold windows the
        cache lacks. Returns (end -> bucket, [(end, store key, value)] from the store)."""
        heap, buckets = self.heap, self.buckets
        popped = {}
        while heap and heap[0] <= bound:
            end = heappop(heap)
            popped[end] = buckets.pop(end)
        stored = []
        if bound >= self.so_next:
            lo = self.prefix
            if self.closed_through >= _MIN_TS:
                lo += pack_ts(self.closed_through + self.rescan)
            nxt = INF
            for skey, raw in self.store.range(lo, self.prefix_end):
                end = unpack_ts(skey[1:9])
                if end > bound:
                    nxt = end
                    break
                stored.append((end, skey, raw))
            self.so_next = nxt if nxt <= self.so_max else INF
        if bound > self.closed_through:
            self.closed_through = bound
        self.next_close = min(heap[0] if heap else INF, self.so_next) + self.lateness
        return popped, stored

    def _emit_closed(self, closing: list[tuple[int, int, bytes, Any, list[Any]]], offset: int,
                     out: Batch) -> None:
        """Count the closed windows and, under emit=final, emit them in (end, start, key) order."""
        self.windows_closed += len(closing)
        if not self.final:
            return
        if len(closing) > 1:
            closing.sort(key=_BY_WINDOW)
        result, dec, shift = self.result, self.key_decode, self.end_shift
        for end, start, kb, key, acc in closing:
            if key is None:
                key = dec(kb)
            out.append((key, {"window_start": start, "window_end": end - shift, **result(acc)},
                        end - 1, offset))

    def _persisted_max(self, writes: dict[bytes, bytes | None], mx: int) -> None:
        if mx > self.max_persisted:
            writes[MAX_END] = orjson.dumps(mx)
            self.max_persisted = mx

    def committed(self) -> None:
        """The flushed writes are in the store: drop what the store now answers for."""
        if self._cached() > self.cache_max_entries:
            self.trim_cache()

    def cache_bytes(self) -> int:
        return self._cached() * CACHED_ENTRY_BYTES

    def trim_cache(self) -> None:
        if self.dirty:
            return
        # everything cached is in the store now and becomes store-only
        if self.heap:
            self.so_next = min(self.so_next, self.heap[0])
        self.so_max = max(self.so_max, self.max_persisted)
        self.buckets.clear()
        self.heap.clear()
        self._trim()
        self.next_close = self.so_next + self.lateness

    def _close(self, bound: int, offset: int, out: Batch) -> None:
        raise NotImplementedError

    def _cached(self) -> int:
        raise NotImplementedError

    def _trim(self) -> None:
        pass
