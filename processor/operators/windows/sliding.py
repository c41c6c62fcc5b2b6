"""Sliding windows: one window per record at t, over its key's records in [t - span, t].

A key's state is `[buffer, windows, max buffered t]`: `buffer` the accepted records
`[t, value]` in arrival order, kept while a future window can still need them (until
t < watermark - allowed_lateness - span); `windows` the open windows `[t, acc]` sorted by t.
Internally a window's exclusive end is t + 1, so it closes once the watermark reaches
t + 1 + allowed_lateness; it reports window_start = t - span, window_end = t.

A record at t joins every open window t' of its key with t' - span <= t <= t', and opens its
own window (if that is not closed yet) from the buffered records within [t - span, t]. Records
with equal timestamps share one window: a second record at t joins the window the first one
opened, so a (key, t) never emits twice. The key's marker end is its first window's end, or
the buffer's expiry (max t + span + 1) when no window is open; the entry goes at that expiry.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from operator import itemgetter
from typing import Any

import orjson

from processor.operators.base import Batch
from processor.operators.windows.keyed import DIRTY, SCHED, STATE, KeyedWindows

_T = itemgetter(0)


class SlidingWindows(KeyedWindows):
    """Per-record windows looking back `span` ms (both bounds inclusive)."""

    end_shift = 1

    def __init__(self, *args: Any, span: int, **kwargs: Any) -> None:
        self.span = span
        super().__init__(*args, **kwargs)

    def _empty(self) -> list[Any]:
        return [[], [], None]

    def _min_end(self, state: list[Any]) -> int | None:
        if state[1]:
            return state[1][0][0] + 1
        return state[2] + self.span + 1 if state[0] else None

    def read(self, store: Any, kb: bytes) -> list[dict[str, Any]]:
        """The key's open windows as committed (queryable state)."""
        raw = store.get(b"K" + kb)
        windows = orjson.loads(raw)[1] if raw is not None else []
        return [{"window_start": t - self.span, "window_end": t, **self.result(acc)}
                for t, acc in windows]

    def process(self, batch: Batch) -> Batch:
        if not batch:
            return []
        wms = self.clock.watermarks_for(batch)
        out: Batch = []
        lateness, span, skip, enc = self.lateness, self.span, self.skip_below, self.key_encode
        update, result, final, fresh = self.update, self.result, self.final, self.fresh
        entries, dirty, late, schedule = self.entries, self.dirty, self.late, self._schedule
        record = None
        try:
            for record, w in zip(batch, wms, strict=True):
                if w >= self.next_close:
                    self._close(w - lateness, record[3] - 1, out)
                k, v, t, o = record
                if v is None or o < skip:
                    continue
                kb = enc(k)
                if kb is None:
                    self._no_key()
                e = entries.get(kb)
                if e is None:
                    e = self._entry(kb, k)
                state = e[STATE]
                buffer, windows = state[0], state[1]
                lo = bisect_left(windows, t, key=_T)
                hi = bisect_right(windows, t + span, lo, key=_T)
                own = t + 1 + lateness > w and not (lo < hi and windows[lo][0] == t)
                if lo == hi and not own:
                    late.append((record, t - span, t, w))
                    self.late_count += 1
                    continue
                changed = windows[lo:hi]
                for x in changed:
                    update(x[1], k, v, t)
                if own:
                    acc = fresh()
                    first = t - span
                    for tb, vb in buffer:
                        if first <= tb <= t:
                            update(acc, k, vb, tb)
                    update(acc, k, v, t)
                    x = [t, acc]
                    windows.insert(lo, x)
                    changed.insert(0, x)
                buffer.append([t, v])
                if state[2] is None or t > state[2]:
                    state[2] = t
                if not e[DIRTY]:
                    e[DIRTY] = True
                    dirty.append(kb)
                s = e[SCHED]  # the index must hold the key by its earliest end (keyed.py)
                if s is None or s <= self.closed_through or windows[0][0] + 1 < s:
                    schedule(kb, e)
                if not final:
                    for x in changed:
                        out.append((k, {"window_start": x[0] - span, "window_end": x[0],
                                        **result(x[1])}, x[0], o))
        except Exception as exc:
            raise self._failed(record, exc, batch=batch, out=out) from exc
        return out

    def _expire(self, kb: bytes, e: list[Any], bound: int, closing: list[Any]) -> bool:
        state = e[STATE]
        buffer, windows, span = state[0], state[1], self.span
        n = 0
        for x in windows:
            if x[0] + 1 > bound:
                break
            closing.append((x[0] + 1, x[0] - span, kb, e[0], x[1]))
            n += 1
        if n:
            del windows[:n]
        keep = [b for b in buffer if b[0] + span + 1 > bound]
        if len(keep) != len(buffer):
            state[0] = keep
        elif not n:
            return False
        if not windows and not keep:
            self.emptied.append(kb)
        return True
