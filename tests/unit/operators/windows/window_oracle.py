"""A brute-force model of the window operators, written from the documented semantics only.

It keeps, per window, the raw (value, timestamp) list of every record accepted into it and
recomputes the aggregates from those lists when a result is due; no accumulators, no store, no
caching. It walks the records in arrival order with the watermark before each record computed
here (W = max event time seen - max_out_of_orderness) and returns (results, late records).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

NO_WATERMARK = -(1 << 62)

# field name -> (function, value field or None); function in count, sum, min, max, avg, first,
# last, collect (a python reducer appending value[field] to a list)
FieldSpec = dict[str, tuple[str, str | None]]


def aggregate(fields: FieldSpec, rows: list[tuple[Any, int]]) -> dict[str, Any]:
    """Aggregates of the (value, timestamp) rows, in the order given."""
    out: dict[str, Any] = {}
    for name, (func, field) in fields.items():
        xs = [v[field] for v, _ in rows] if field else [None] * len(rows)
        present = [x for x in xs if x is not None]
        if func == "count":
            out[name] = len(rows) if field is None else len(present)
        elif func == "sum":
            out[name] = sum(present)
        elif func == "min":
            out[name] = min(present) if present else None
        elif func == "max":
            out[name] = max(present) if present else None
        elif func == "avg":
            out[name] = sum(present) / len(present) if present else None
        elif func == "first":
            out[name] = xs[0] if xs else None
        elif func == "last":
            out[name] = xs[-1] if xs else None
        elif func == "collect":
            out[name] = list(xs)
        else:
            raise AssertionError(func)
    return out


class _Window:
    def __init__(self, key: Any, kb: bytes, start: int, end: int) -> None:
        self.key, self.kb, self.start, self.end = key, kb, start, end  # end: exclusive
        self.rows: list[tuple[Any, int]] = []
        self.index = 0  # count windows


def run_oracle(kind: str, params: dict[str, int], records: list[tuple[Any, Any, int, int]], *,
               ooo: int, lateness: int, emit: str, fields: FieldSpec,
               encode: Callable[[Any], bytes] = lambda k: str(k).encode(),
               watermark_calls: dict[int, int] | None = None,
               final_call: int | None = None) -> tuple[list[Any], list[Any]]:
    """Results and late records of a window step over `records` (key, value, t, offset).

    watermark_calls: {i: offset} — after record i, close what the watermark after it passed
    (results carry `offset`), like an `on_watermark` call at a batch end. final_call: offset of
    one more such call after the last record."""
    final = emit == "final"
    calls = dict(watermark_calls or {})
    results: list[Any] = []
    late: list[Any] = []
    open_windows: list[_Window] = []  # time windows
    accepted: dict[bytes, list[tuple[Any, int]]] = {}  # sliding: every accepted (value, t)
    count_seen: dict[bytes, int] = {}
    count_open: dict[bytes, list[_Window]] = {}
    max_seen: int | None = None

    def report(w: _Window, offset: int) -> None:
        if kind == "count":
            ts = [t for _, t in w.rows]
            value = {"window_start": min(ts), "window_end": max(ts), "window_index": w.index,
                     **aggregate(fields, w.rows)}
            results.append((w.key, value, max(ts), offset))
        elif kind == "sliding":  # internal end t + 1, reported window_end t
            value = {"window_start": w.start, "window_end": w.end - 1, **aggregate(fields, w.rows)}
            results.append((w.key, value, w.end - 1, offset))
        else:
            value = {"window_start": w.start, "window_end": w.end, **aggregate(fields, w.rows)}
            results.append((w.key, value, w.end - 1, offset))

    def close(wm: int, offset: int) -> None:
        due = sorted((w for w in open_windows if w.end + lateness <= wm),
                     key=lambda w: (w.end, w.start, w.kb))
        for w in due:
            open_windows.remove(w)
            if final:
                report(w, offset)

    def is_open(end: int, wm: int) -> bool:
        return end + lateness > wm

    def find(kb: bytes, start: int, end: int) -> _Window | None:
        for w in open_windows:
            if (w.kb, w.start, w.end) == (kb, start, end):
                return w
        return None

    def watermark() -> int:
        return NO_WATERMARK if max_seen is None else max_seen - ooo

    for i, record in enumerate(records):
        key, value, t, offset = record
        wm = watermark()
        if kind != "count":
            close(wm, offset - 1)  # closed by the records before this one
        max_seen = t if max_seen is None else max(max_seen, t)
        if value is not None:
            kb = encode(key)
            row = (value, t)
            if kind in ("tumbling", "hopping"):
                size = params["size"]
                advance = params.get("advance", size)
                starts = [s for s in range(t - size - advance, t + 1)
                          if s % advance == 0 and s <= t < s + size]
                opened = [s for s in starts if is_open(s + size, wm)]
                if not opened:
                    s = max(starts)
                    late.append((record, s, s + size, wm))
                for s in opened:
                    w = find(kb, s, s + size)
                    if w is None:
                        w = _Window(key, kb, s, s + size)
                        open_windows.append(w)
                    w.rows.append(row)
                    if not final:
                        report(w, offset)
            elif kind == "session":
                gap = params["gap"]
                mine = [w for w in open_windows if w.kb == kb and w.start < t + gap and t < w.end]
                mine.sort(key=lambda w: w.start)
                start = min([t] + [w.start for w in mine])
                end = max([t + gap] + [w.end for w in mine])
                if not is_open(end, wm):
                    late.append((record, t, t + gap, wm))
                else:
                    merged = _Window(key, kb, start, end)
                    for w in mine:
                        open_windows.remove(w)
                        merged.rows.extend(w.rows)
                    merged.rows.append(row)
                    open_windows.append(merged)
                    if not final:
                        report(merged, offset)
            elif kind == "sliding":
                span = params["span"]
                targets = sorted((w for w in open_windows
                                  if w.kb == kb and w.end - 1 - span <= t <= w.end - 1),
                                 key=lambda w: w.end)
                own_open = is_open(t + 1, wm)
                if not own_open and not targets:
                    late.append((record, t - span, t, wm))
                else:
                    changed = list(targets)
                    for w in targets:
                        w.rows.append(row)
                    if own_open and find(kb, t - span, t + 1) is None:
                        w = _Window(key, kb, t - span, t + 1)
                        w.rows = [r for r in accepted.get(kb, []) if t - span <= r[1] <= t] + [row]
                        open_windows.append(w)
                        changed.insert(0, w)
                    accepted.setdefault(kb, []).append(row)
                    if not final:
                        for w in changed:
                            report(w, offset)
            elif kind == "count":
                size, slide = params["size"], params.get("slide", params["size"])
                if t + 1 + lateness <= wm:
                    late.append((record, t, t, wm))
                else:
                    n = count_seen.get(kb, 0)
                    windows = count_open.setdefault(kb, [])
                    if n % slide == 0:
                        w = _Window(key, kb, 0, 0)
                        w.index = n // slide
                        windows.append(w)
                    for w in windows:
                        w.rows.append(row)
                        if not final:
                            report(w, offset)
                    for w in [w for w in windows if len(w.rows) == size]:
                        windows.remove(w)
                        if final:
                            report(w, offset)
                    count_seen[kb] = n + 1
            else:
                raise AssertionError(kind)
        if i in calls and kind != "count":
            close(watermark(), calls[i])
    if final_call is not None and kind != "count":
        close(watermark(), final_call)
    return results, late
