"""Joins: stream-stream interval joins on event time, and stream-table lookups.

`IntervalJoin` (Flink's interval join). Input records are `(key, (side, value), ts, offset)`
from the join's repartition topic: side 0 = left (the pipeline's own stream), side 1 = right
(the `with:` stream). A left record at tl and a right record at tr of the same key join when

    tl - before_ms <= tr <= tl + after_ms

Each record is matched against the other side's stored records of its key as it arrives — one
output per pair, right away: `(key, {left_name: lv, right_name: rv}, max(tl, tr))` — and is then
stored. Tombstones (value None) are ignored. Outputs follow arrival order (pairs of one record in
the order the other side's records were stored), so a replay gives the same sequence.

Lateness and bounds. A record is late if its timestamp is behind the watermark in force when it
arrives (ts < ctx.watermark, as in Flink): it is dropped (no state, no output) and appended to
`self.late` as `(record, 0, 0, watermark)` for the runtime to count. Every record that is not
late therefore finds all its partners: a right record may have partners up to tr + before_ms,
so it is kept while watermark <= tr + before_ms and any left record accepted meanwhile has
tl >= watermark; symmetrically a left record is kept while watermark <= tl + after_ms. An
event-time timer at that time + 1 removes the record; a kind "left" / "outer" join then emits
an unmatched left record as `{left_name: lv, right_name: None}` at tl, a kind "outer" join an
unmatched right record as `{left_name: None, right_name: rv}` at tr. No later record can match
it, so the unmatched result is final. (Accepting records behind the watermark whose own
interval is still open would make both unsafe: their partners may already be gone.)

State layout, per key, two map states (operators/process.py layout):

    s m \\x01l <key>   left records:  {"<tl>:<offset>:<n>": [lv, matched 0|1], ...}
    s m \\x01r <key>   right records: {"<tr>:<offset>:<n>": [rv, matched 0|1], ...}
    t e <ts + bound + 1> <key>       the cleanup timers

`n` keeps records with equal time and offset apart; the entry's time is read from its map key,
so matching decodes only the values that join. The store holds the records of the last
after_ms (left) / before_ms (right) of event time plus the out-of-orderness, nothing more.

`TableJoin`: enrich each record with the row of a table (a store of raw table records):
`{**value, field: table value}`; kind "inner" drops records without a row, "left" keeps them
with None. A null lookup key finds no row (no lookup); a value that is not a mapping (a
tombstone included) fails its record. Stateless: it only reads the table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from processor.operators.base import Batch, Stateless
from processor.operators.context import check_timestamp
from processor.operators.process import ProcessFunction, wall_clock_ms
from processor.operators.reconcile import RESERVED_SIDE_NAMES, Reconcile, side_value
from processor.timeutil.watermark import Clock

_MISS: Any = object()

__all__ = ["INTERVAL_KINDS", "RESERVED_SIDE_NAMES", "IntervalJoin", "Reconcile", "TableJoin"]

INTERVAL_KINDS = ("inner", "left", "outer")
_SIDES = ("l", "r")  # map state names of the left and right records


def _time_of(entry_id: str) -> int:
    return int(entry_id[:entry_id.index(":")])


class IntervalJoin(ProcessFunction):
    """Stream-stream join of records whose event times lie within [-before, +after] of each other."""

    def __init__(self, name: str, store_name: str, key_encode: Callable[[Any], bytes | None],
                 key_decode: Callable[[bytes], Any], clock: Clock, *, before_ms: int, after_ms: int,
                 kind: str, names: tuple[str, str], cache_max_entries: int = 100_000,
                 now_ms: Callable[[], int] = wall_clock_ms) -> None:
        if kind not in INTERVAL_KINDS:
            raise ValueError(f"interval join kind must be one of {', '.join(INTERVAL_KINDS)}, got {kind!r}")
        if before_ms < 0 or after_ms < 0:
            raise ValueError("interval join bounds must not be negative")
        left, right = names
        if left == right:
            raise ValueError(f"the two sides of an interval join need distinct names, got {left!r} twice")
        super().__init__(name, store_name, self._on_record, self._on_cleanup, key_encode,
                         key_decode, clock, cache_max_entries, now_ms)
        self.before_ms, self.after_ms, self.kind = before_ms, after_ms, kind
        self.names = (left, right)
        # per side: how long after its own time a record can still meet a new partner, and
        # whether it is emitted alone when it leaves unmatched
        self._keep = (after_ms, before_ms)
        self._alone = (kind != "inner", kind == "outer")

    def _on_record(self, ctx: Any, key: Any, value: Any) -> None:
        side, v = side_value(value, 2)
        if v is None:
            return
        ts, wm = ctx.timestamp, ctx.watermark
        if ts < wm:
            self.late.append(((key, value, ts, ctx.offset), 0, 0, wm))
            self.late_count += 1
            return
        expiry = check_timestamp(ts + self._keep[side] + 1)  # may fail: before any change
        if side == 0:
            lo, hi = ts - self.before_ms, ts + self.after_ms
        else:
            lo, hi = ts - self.after_ms, ts + self.before_ms
        state = ctx.state
        own, other = state.map(_SIDES[side]), state.map(_SIDES[1 - side])
        stored = other.keys()  # a list (MapState is not iterable)
        matches = [(k, t) for k in stored if lo <= (t := _time_of(k)) <= hi]
        prefix = f"{ts}:{ctx.offset}:"
        n = 0
        while f"{prefix}{n}" in own:
            n += 1
        own.put(f"{prefix}{n}", [v, 1 if matches else 0])  # serializes first: may fail, changes nothing
        ctx.timers.register_event_time(expiry)
        if not matches:
            return
        mark = self._alone[1 - side]  # the flag only matters if the other side may be emitted alone
        left, right = self.names
        emit = ctx.emit
        for k, t in matches:
            entry = other.get(k)
            if mark and not entry[1]:
                entry[1] = 1
                other.put(k, entry)
            pair = {left: v, right: entry[0]} if side == 0 else {left: entry[0], right: v}
            emit(pair, timestamp=ts if ts >= t else t)

    def _on_cleanup(self, ctx: Any, key: Any, ts: int) -> None:
        """Remove the records whose interval the watermark passed; emit unmatched ones alone."""
        left, right = self.names
        for side in (0, 1):
            records = ctx.state.map(_SIDES[side])
            keep, alone = self._keep[side], self._alone[side]
            stored = records.keys()  # a copy: removing while going through it is fine
            for k in stored:
                t = _time_of(k)
                if t + keep >= ts:
                    continue
                if alone:
                    v, matched = records.get(k)
                    if not matched:
                        ctx.emit({left: v, right: None} if side == 0 else {left: None, right: v},
                                 timestamp=t)
                records.remove(k)


class TableJoin(Stateless):
    """Stream-table lookup join: add the table's row for the record (or its lookup key) as `field`."""

    def __init__(self, name: str, table: Any, key_fn: Callable[[Any, Any, int], Any] | None,
                 key_encode: Callable[[Any], bytes | None], value_decode: Callable[[bytes], Any],
                 kind: str, field: str) -> None:
        if kind not in ("inner", "left"):
            raise ValueError(f"table join kind must be inner or left, got {kind!r}")
        super().__init__(name)
        self.table, self.key_fn, self.key_encode, self.value_decode = table, key_fn, key_encode, value_decode
        self.kind, self.field = kind, field

    def _batch(self, batch: Batch) -> Batch:
        table = self.table
        get, enc, dec, key_fn, field = (table.get, self.key_encode, self.value_decode,
                                        self.key_fn, self.field)
        cache: dict[bytes, bytes | None] = getattr(table, "cache", {})  # see TableStore.cache
        if len(cache) > getattr(table, "cache_max_entries", 0):
            cache.clear()
        inner = self.kind == "inner"
        out: Batch = []
        append = out.append
        for k, v, t, o in batch:
            if type(v) is not dict and not isinstance(v, Mapping):
                raise TypeError(f"join adds field {field!r} to the value, which must be a mapping "
                                f"(got {type(v).__name__})")
            lk = k if key_fn is None else key_fn(k, v, t)
            if lk is None:
                raw = None
            else:
                kb = enc(lk)
                raw = cache.get(kb, _MISS)
                if raw is _MISS:
                    raw = cache[kb] = get(kb)
            if raw is None:
                if not inner:
                    append((k, {**v, field: None}, t, o))
                continue
            append((k, {**v, field: dec(raw)}, t, o))
        return out
