"""`reconcile`: co-group N >= 2 streams by business id, report each group once, with a timeout.

Input records are `(key, (side, value), ts, offset)` from the join's repartition topic; side i
is the stream named `names[i]` (0 = the pipeline's own stream). Tombstones (value None) are
ignored: they neither open nor fill a group.

A group opens with the first record of a key that has none open, at event time t0; its
deadline is t0 + timeout. Each side keeps its latest value; a repeated
record of a side replaces the earlier value and is counted. The group is reported exactly once:

- as soon as every side is present (timestamp = the completing record's):
  `{"key", "status": "matched" | "mismatched", "missing": [], <name>: value for every side}`,
  "mismatched" when the `mismatch(key, {name: value}, ts)` expression is truthy;
- else when the watermark reaches the deadline (watermark >= t0 + timeout; timestamp = t0 +
  timeout):
  `{"key", "status": "incomplete", "missing": [absent names, in side order], <name>: value | None}`;

plus `"repeats": {name: n}` when some side repeated (omitted otherwise). Reporting clears the
group (and its deadline): a later record of the key opens a new group, which is reported in turn,
so no record is lost — even one arriving after its group's timeout (it is never "late").

State: one store entry per open group, the groups in memory and an index of their deadlines
(operators/reconcile_state.py), so a record costs one in-memory lookup and one put. Deadlines
fire before the record that brings the watermark past them, in (deadline, key bytes) order.
A group goes from the store when it is reported, so the store holds only groups opened within
the last `timeout` of event time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import orjson

from processor.operators.base import (
    Batch,
    LateRecord,
    Record,
    StepFailed,
)
from processor.operators.context import check_timestamp
from processor.operators.expiring import ExpiringStateOperator
from processor.operators.reconcile_state import REPEATS, T0, VALUES, GroupState
from processor.serde.formats import compact_json
from processor.timeutil.watermark import Clock

RESERVED_SIDE_NAMES = frozenset({"key", "status", "missing", "repeats"})
"""Fields of every reconcile result: a side may not be named after one of them."""

_loads = orjson.loads


def side_value(value: Any, sides: int) -> tuple[int, Any]:
    """Split a join input value `(side, value)`, checking the side (an internal topic's record
    written by something else fails here, before any state changes)."""
    if type(value) not in (tuple, list) or len(value) != 2:
        raise ValueError(f"a join input value must be a (side, value) pair, got {type(value).__name__}")
    side, v = value
    if type(side) is not int or not 0 <= side < sides:
        raise ValueError(f"join input side must be an int in [0, {sides}), got {side!r}")
    return side, v


class Reconcile(ExpiringStateOperator):
    """Co-group N streams by key: one result per group, when complete or when it times out.
    `key_encode` gives bytes the state keeps (open groups, the expiry index): compact ones, as
    `serde.state_key_serde` makes them."""

    def __init__(self, name: str, store_name: str, key_encode: Callable[[Any], bytes | None],
                 key_decode: Callable[[bytes], Any], clock: Clock, *, names: Sequence[str],
                 timeout_ms: int, mismatch: Callable[[Any, Any, int], Any] | None = None,
                 cache_max_entries: int = 100_000) -> None:
        names = list(names)
        if len(names) < 2 or len(set(names)) != len(names):
            raise ValueError(f"reconcile needs at least two distinct side names, got {names}")
        clash = RESERVED_SIDE_NAMES.intersection(names)
        if clash:
            raise ValueError(f"side name {sorted(clash)[0]!r} is a field of every reconcile result")
        if timeout_ms <= 0:
            raise ValueError(f"reconcile timeout must be positive, got {timeout_ms}")
        self.name, self.store_name = name, store_name
        self.key_encode, self.key_decode, self.clock = key_encode, key_decode, clock
        self.names = names
        self.timeout_ms = timeout_ms
        self.mismatch = mismatch
        self.state = GroupState(cache_max_entries)
        self.late: list[LateRecord] = []  # never filled: a record is never late for a reconcile
        self._last_offset = -1

    # -- records and time ----------------------------------------------------------------------

    def _record(self, record: Record, wm: int, out: Batch) -> None:
        key, value, ts, offset = record
        kb = self.key_encode(key)
        if kb is None:
            raise ValueError("record key is null; a reconcile needs a key (use key_by)")
        names = self.names
        side, v = side_value(value, len(names))
        if v is None:
            return
        raw = compact_json(v)  # may fail: before any change
        state = self.state
        group = state.get(kb)
        if group is None:
            t0 = ts
            values: list[bytes | None] = [None] * len(names)
            repeats = [0] * len(names)
        else:
            t0, values, repeats = group[T0], list(group[VALUES]), list(group[REPEATS])
        if values[side] is not None:
            repeats[side] += 1
        values[side] = raw
        if None in values:
            # everything that can fail (the deadline's range) comes before a change
            deadline = check_timestamp(t0 + self.timeout_ms)
            if group is None:
                state.put(kb, [t0, deadline, values, repeats, False])
            else:
                group[VALUES], group[REPEATS] = values, repeats
                state.put(kb, group)
            return
        sides = {n: v if i == side else _loads(x) for i, (n, x) in enumerate(zip(names, values, strict=True))}
        mismatch = self.mismatch
        # the expression runs before any change: if it raises, this record changed nothing
        status = "mismatched" if mismatch is not None and mismatch(key, sides, ts) else "matched"
        if group is not None:
            state.remove(kb, group)
        out.append((key, self._result(key, status, [], sides, repeats), ts, offset))

    def _expire(self, watermark: int, offset: int, out: Batch) -> None:
        """Report every group whose deadline is <= watermark as incomplete."""
        state, names = self.state, self.names
        index = state.index()
        while (due := index.pop(watermark)) is not None:
            deadline, kb = due
            group = state.get(kb)
            assert group is not None
            state.remove(kb, group)
            try:
                key = self.key_decode(kb)
                values = [None if x is None else _loads(x) for x in group[VALUES]]
            except Exception as exc:
                failed = StepFailed(self.name, (None, None, deadline, offset), exc, partial=out)
                failed.retry = True  # this group is gone: calling again goes on past it
                raise failed from exc
            missing = [n for n, x in zip(names, values, strict=True) if x is None]
            sides = dict(zip(names, values, strict=True))
            out.append((key, self._result(key, "incomplete", missing, sides, group[REPEATS]),
                        deadline, offset))

    def _result(self, key: Any, status: str, missing: list[str], sides: dict[str, Any],
                repeats: list[int]) -> dict[str, Any]:
        result = {"key": key, "status": status, "missing": missing, **sides}
        if any(repeats):
            result["repeats"] = {n: r for n, r in zip(self.names, repeats, strict=True) if r}
        return result
