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

State: one store entry per buffered record and an in-memory index of each key's next expiry
(operators/interval_state.py), so a record costs one in-memory match and one put, and the
expiries due at a watermark are found without scanning the store. Removing a record at its
expiry (time + bound + 1) is the event-time timer of the description above: expiries fire
before the record that brings the watermark past them, in (expiry, key bytes) order, each
key's due records left side first, in arrival order. The store holds the records of the last
after_ms (left) / before_ms (right) of event time plus the out-of-orderness, nothing more.

`TableJoin`: enrich each record with the row of a table (a store of raw table records):
`{**value, field: table value}`; kind "inner" drops records without a row, "left" keeps them
with None. A null lookup key finds no row (no lookup); a value that is not a mapping (a
tombstone included) fails its record. Stateless: it only reads the table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

from processor.operators.base import (
    Batch,
    LateRecord,
    Record,
    Stateless,
    StepFailed,
)
from processor.operators.context import check_timestamp
from processor.operators.expiring import ExpiringStateOperator
from processor.operators.interval_state import Buffered, IntervalState
from processor.operators.reconcile import RESERVED_SIDE_NAMES, Reconcile, side_value
from processor.serde.formats import compact, compact_json
from processor.timeutil.watermark import Clock

_MISS: Any = object()

__all__ = ["INTERVAL_KINDS", "RESERVED_SIDE_NAMES", "IntervalJoin", "Reconcile", "TableJoin"]

INTERVAL_KINDS = ("inner", "left", "outer")
_loads = orjson.loads


class IntervalJoin(ExpiringStateOperator):
    """Stream-stream join of records whose event times lie within [-before, +after] of each other.
    `key_encode` gives bytes the state keeps (a key's records, the expiry index): compact ones,
    as `serde.state_key_serde` makes them."""

    def __init__(self, name: str, store_name: str, key_encode: Callable[[Any], bytes | None],
                 key_decode: Callable[[bytes], Any], clock: Clock, *, before_ms: int, after_ms: int,
                 kind: str, names: tuple[str, str], cache_max_entries: int = 100_000) -> None:
        if kind not in INTERVAL_KINDS:
            raise ValueError(f"interval join kind must be one of {', '.join(INTERVAL_KINDS)}, got {kind!r}")
        if before_ms < 0 or after_ms < 0:
            raise ValueError("interval join bounds must not be negative")
        left, right = names
        if left == right:
            raise ValueError(f"the two sides of an interval join need distinct names, got {left!r} twice")
        self.name, self.store_name = name, store_name
        self.key_encode, self.key_decode, self.clock = key_encode, key_decode, clock
        self.before_ms, self.after_ms, self.kind = before_ms, after_ms, kind
        self.names = (left, right)
        # per side: how long after its own time a record can still meet a new partner, and
        # whether it is emitted alone when it leaves unmatched
        self._keep = (after_ms, before_ms)
        self._alone = (kind != "inner", kind == "outer")
        self.state = IntervalState(cache_max_entries)
        self.late: list[LateRecord] = []
        self.late_count = 0
        self._last_offset = -1

    # -- records and time ----------------------------------------------------------------------

    def _record(self, record: Record, wm: int, out: Batch) -> None:
        key, value, ts, offset = record
        kb = self.key_encode(key)
        if kb is None:
            raise ValueError("record key is null; an interval join needs a key (use key_by)")
        if type(value) is tuple and len(value) == 2 and (value[0] == 0 or value[0] == 1) \
                and type(value[0]) is int:
            side, v = value
        else:
            side, v = side_value(value, 2)  # a list, or a value that fails here
        if v is None:
            return
        if ts < wm:
            self.late.append((record, 0, 0, wm))
            self.late_count += 1
            return
        expiry = check_timestamp(ts + self._keep[side] + 1)  # may fail: before any change
        raw = compact_json(v)  # may fail too
        if side == 0:
            lo, hi = ts - self.before_ms, ts + self.after_ms
        else:
            lo, hi = ts - self.after_ms, ts + self.before_ms
        state = self.state
        sides = state.cached(kb)
        if sides is None:
            sides = state.records(kb)
        other = sides[1 - side]
        matches = [i for i, b in enumerate(other) if lo <= b[0] <= hi] if other else other
        state.add(kb, sides, side, ts, expiry, offset, raw, 1 if matches else 0)
        if not matches:
            return
        mark = self._alone[1 - side]  # the flag only matters if the other side may be emitted alone
        left, right = self.names
        append = out.append
        for i in matches:
            b = other[i]
            if mark and not b[2]:  # MATCHED
                state.mark(other, i)
            o = _loads(b[3])  # RAW: a fresh copy per output, as stored
            t = b[0]  # TS
            append((key, {left: v, right: o} if side == 0 else {left: o, right: v},
                    ts if ts >= t else t, offset))

    def _expire(self, watermark: int, offset: int, out: Batch) -> None:
        """Remove the records with expiry <= watermark; emit unmatched ones alone by the kind."""
        left, right = self.names
        alone, decode = self._alone, self.key_decode
        keys: dict[bytes, Any] = {}

        def expired(kb: bytes, side: int, b: Buffered) -> None:
            if not alone[side] or b[2]:  # MATCHED
                return
            key = keys.get(kb, _MISS)
            if key is _MISS:
                key = keys[kb] = decode(kb)
            v = _loads(b[3])  # RAW
            out.append((key, {left: v, right: None} if side == 0 else {left: None, right: v},
                        b[0], offset))  # TS

        try:
            self.state.expire(watermark, expired)
        except Exception as exc:
            failed = StepFailed(self.name, (None, None, watermark, offset), exc, partial=out)
            failed.retry = True  # the failing record is gone: calling again goes on past it
            raise failed from exc


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
                if raw is _MISS:  # a copy of the key: orjson's bytes would keep 4 KiB cached
                    raw = cache[compact(kb)] = get(kb)
            if raw is None:
                if not inner:
                    append((k, {**v, field: None}, t, o))
                continue
            append((k, {**v, field: dec(raw)}, t, o))
        return out
