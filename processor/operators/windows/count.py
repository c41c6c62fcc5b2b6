"""Count windows: per key, in arrival order, window i covers records [i*slide, i*slide + size).

A key's state, `C <key> -> [n, [[i, acc, min t, max t], ...]]`, is the number of records it
has seen and its partial windows (at most ceil(size / slide)). A window emits when it holds
`size` records (emit=final), or on every change (emit=updates), reporting the smallest and
largest event time of its records as window_start / window_end and its index. Count windows
never close by time, so the watermark only decides lateness: a record is late when
t + 1 + allowed_lateness <= watermark.
"""

from __future__ import annotations

from typing import Any

import orjson

from processor.operators.base import CACHED_ENTRY_BYTES, Batch, KeyFamilyError, StoreKeys
from processor.operators.windows.base import WindowOperator
from processor.serde.formats import compact_json


def record_key(store_key: bytes) -> bytes | None:
    """The key of a `C <key>` entry (count windows keep no bookkeeping entry)."""
    if store_key[:1] == b"C":
        return store_key[1:]
    raise KeyFamilyError(f"{store_key[:1]!r} is no family of a count window store")


STORE_KEYS = StoreKeys("C<key>", record_key)


class CountWindows(WindowOperator):
    """Windows of `size` records advancing by `slide` records."""

    def __init__(self, *args: Any, size: int, slide: int, **kwargs: Any) -> None:
        self.size = size
        self.slide = slide
        super().__init__(*args, **kwargs)

    def _reset(self) -> None:
        self.entries: dict[bytes, list[Any]] = {}  # key bytes -> [state, dirty]
        self.dirty: list[bytes] = []

    def _entry(self, kb: bytes) -> list[Any]:
        raw = self.store.get(b"C" + kb)
        e = [[0, []] if raw is None else orjson.loads(raw), False]
        self.entries[kb] = e
        return e

    def pending(self) -> dict[str, int]:
        """Per key, one entry listing its windows still filling."""
        if self.store is None:
            return {}
        entries = self.store.range(b"C", b"D")
        return {"windows": sum(len(orjson.loads(raw)[1]) for _, raw in entries)}

    def read(self, store: Any, kb: bytes) -> list[dict[str, Any]]:
        """The key's open count windows as committed (queryable state)."""
        raw = store.get(b"C" + kb)
        windows = orjson.loads(raw)[1] if raw is not None else []
        return [{"window_start": lo, "window_end": hi, "window_index": i, **self.result(acc)}
                for i, acc, lo, hi in windows]

    def process(self, batch: Batch) -> Batch:
        if not batch:
            return []
        wms = self.clock.watermarks_for(batch)
        out: Batch = []
        lateness, size, slide, skip = self.lateness, self.size, self.slide, self.skip_below
        enc, update, result, final, fresh = (self.key_encode, self.update, self.result,
                                             self.final, self.fresh)
        entries, dirty, late = self.entries, self.dirty, self.late
        record = None
        try:
            for record, w in zip(batch, wms, strict=True):
                k, v, t, o = record
                if v is None or o < skip:
                    continue
                if t + 1 + lateness <= w:
                    late.append((record, t, t, w))
                    self.late_count += 1
                    continue
                kb = enc(k)
                if kb is None:
                    self._no_key()
                e = entries.get(kb)
                if e is None:
                    e = self._entry(kb)
                state = e[0]
                n, windows = state
                for x in windows:
                    update(x[1], k, v, t)
                    if t < x[2]:
                        x[2] = t
                    if t > x[3]:
                        x[3] = t
                    if not final:
                        out.append((k, {"window_start": x[2], "window_end": x[3], "window_index": x[0],
                                        **result(x[1])}, x[3], o))
                if n % slide == 0:  # opened once updated: a failing record leaves no window
                    acc = fresh()
                    update(acc, k, v, t)
                    x = [n // slide, acc, t, t]
                    windows.append(x)
                    if not final:
                        out.append((k, {"window_start": t, "window_end": t, "window_index": x[0],
                                        **result(acc)}, t, o))
                x = windows[0]
                if x[0] * slide + size - 1 == n:  # the oldest window is full
                    del windows[0]
                    self.windows_closed += 1
                    if final:
                        out.append((k, {"window_start": x[2], "window_end": x[3], "window_index": x[0],
                                        **result(x[1])}, x[3], o))
                state[0] = n + 1
                if not e[1]:
                    e[1] = True
                    dirty.append(kb)
        except Exception as exc:
            raise self._failed(record, exc, batch=batch, out=out) from exc
        return out

    def flush(self) -> tuple[Batch, dict[bytes, bytes | None]]:
        entries = self.entries
        writes: dict[bytes, bytes | None] = {}
        for kb in self.dirty:
            e = entries[kb]
            e[1] = False
            writes[b"C" + kb] = compact_json(e[0])
        self.dirty = []
        return [], writes

    def committed(self) -> None:
        if len(self.entries) > self.cache_max_entries:
            self.trim_cache()

    def cache_bytes(self) -> int:
        return len(self.entries) * CACHED_ENTRY_BYTES

    def trim_cache(self) -> None:
        if not self.dirty:
            self.entries.clear()
