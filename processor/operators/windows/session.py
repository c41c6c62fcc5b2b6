"""Session windows: each record is the window [t, t + gap); overlapping windows of a key merge.

A key's state is its open sessions, `[[start, end, acc], ...]`, disjoint and sorted by start
(hence also by end). A record overlapping one session extends it and updates its accumulator;
one overlapping several merges them in start order with the generated `merge(earlier, later)`
and then adds the record. Only open sessions take part (closed ones are gone), so a record is
late only when it overlaps none and its own window [t, t + gap) is already closed.
"""

from __future__ import annotations

from typing import Any

import orjson

from processor.errors import ExpressionError
from processor.operators.base import Batch
from processor.operators.windows.keyed import DIRTY, SCHED, STATE, KeyedWindows


class SessionWindows(KeyedWindows):
    """Per-key sessions separated by `gap` ms of inactivity."""

    def __init__(self, *args: Any, gap: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.agg.merge is None:
            raise ExpressionError(
                "session windows merge accumulators, so every python reducer needs `merge: "
                "module:function` (merge(earlier, later) -> accumulator); missing for: "
                + ", ".join(self.agg.no_merge))
        self.gap = gap
        self.merge = self.agg.merge

    def _empty(self) -> list[Any]:
        return []

    def _min_end(self, state: list[Any]) -> int | None:
        return state[0][1] if state else None

    def read(self, store: Any, kb: bytes) -> list[dict[str, Any]]:
        """The key's open sessions as committed (queryable state)."""
        raw = store.get(b"K" + kb)
        sessions = orjson.loads(raw) if raw is not None else []
        return [{"window_start": s, "window_end": e, **self.result(acc)} for s, e, acc in sessions]

    def process(self, batch: Batch) -> Batch:
        if not batch:
            return []
        wms = self.clock.watermarks_for(batch)
        out: Batch = []
        lateness, gap, skip, enc = self.lateness, self.gap, self.skip_below, self.key_encode
        update, merge, result, final, fresh = self.update, self.merge, self.result, self.final, self.fresh
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
                sessions = e[STATE]
                ne = t + gap
                i = n = 0
                for x in sessions:  # the overlapping sessions are contiguous: [i, i + n)
                    if x[1] <= t:
                        i += 1
                    elif x[0] < ne:
                        n += 1
                    else:
                        break
                if n == 0:
                    if ne + lateness <= w:
                        late.append((record, t, ne, w))
                        self.late_count += 1
                        continue
                    acc = fresh()
                    update(acc, k, v, t)
                    x = [t, ne, acc]
                    sessions.insert(i, x)
                elif n == 1:
                    x = sessions[i]
                    update(x[2], k, v, t)
                    if t < x[0]:
                        x[0] = t
                    if ne > x[1]:
                        x[1] = ne
                else:
                    acc = sessions[i][2]
                    for y in sessions[i + 1:i + n]:
                        acc = merge(acc, y[2])
                    update(acc, k, v, t)
                    x = [min(sessions[i][0], t), max(sessions[i + n - 1][1], ne), acc]
                    sessions[i:i + n] = [x]
                if not e[DIRTY]:
                    e[DIRTY] = True
                    dirty.append(kb)
                s = e[SCHED]  # the index must hold the key by its earliest end (keyed.py)
                if s is None or s <= self.closed_through or sessions[0][1] < s:
                    schedule(kb, e)
                if not final:
                    out.append((k, {"window_start": x[0], "window_end": x[1], **result(x[2])},
                                x[1] - 1, o))
        except Exception as exc:
            raise self._failed(record, exc, batch=batch, out=out) from exc
        return out

    def _expire(self, kb: bytes, e: list[Any], bound: int, closing: list[Any]) -> bool:
        sessions = e[STATE]
        n = 0
        for x in sessions:
            if x[1] > bound:
                break
            closing.append((x[1], x[0], kb, e[0], x[2]))
            n += 1
        if not n:
            return False
        del sessions[:n]
        if not sessions:
            self.emptied.append(kb)
        return True
