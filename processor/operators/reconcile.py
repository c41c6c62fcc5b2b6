"""`reconcile`: co-group N >= 2 streams by business id, report each group once, with a timeout.

Input records are `(key, (side, value), ts, offset)` from the join's repartition topic; side i
is the stream named `names[i]` (0 = the pipeline's own stream). Tombstones (value None) are
ignored: they neither open nor fill a group.

A group opens with the first record of a key that has none open, at event time t0, and an
event-time timer is registered at t0 + timeout. Each side keeps its latest value; a repeated
record of a side replaces the earlier value and is counted. The group is reported exactly once:

- as soon as every side is present (timestamp = the completing record's):
  `{"key", "status": "matched" | "mismatched", "missing": [], <name>: value for every side}`,
  "mismatched" when the `mismatch(key, {name: value}, ts)` expression is truthy;
- else when the timer fires (watermark >= t0 + timeout; timestamp = t0 + timeout):
  `{"key", "status": "incomplete", "missing": [absent names, in side order], <name>: value | None}`;

plus `"repeats": {name: n}` when some side repeated (omitted otherwise). Reporting clears the
group (and its timer): a later record of the key opens a new group, which is reported in turn,
so no record is lost — even one arriving after its group's timeout (it is never "late").

State: one value per open group, `s v \\x01g <key>` -> `[t0, [value | null per side],
[repeats per side]]`, plus its timer `t e <t0 + timeout> <key>`. Both go when the group is
reported, so the store holds only groups opened within the last `timeout` of event time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from processor.operators.context import check_timestamp
from processor.operators.process import ProcessFunction, wall_clock_ms
from processor.timeutil.watermark import Clock

RESERVED_SIDE_NAMES = frozenset({"key", "status", "missing", "repeats"})
"""Fields of every reconcile result: a side may not be named after one of them."""

_GROUP = "g"


def side_value(value: Any, sides: int) -> tuple[int, Any]:
    """Split a join input value `(side, value)`, checking the side (an internal topic's record
    written by something else fails here, before any state changes)."""
    if type(value) not in (tuple, list) or len(value) != 2:
        raise ValueError(f"a join input value must be a (side, value) pair, got {type(value).__name__}")
    side, v = value
    if type(side) is not int or not 0 <= side < sides:
        raise ValueError(f"join input side must be an int in [0, {sides}), got {side!r}")
    return side, v


class Reconcile(ProcessFunction):
    """Co-group N streams by key: one result per group, when complete or when it times out."""

    def __init__(self, name: str, store_name: str, key_encode: Callable[[Any], bytes | None],
                 key_decode: Callable[[bytes], Any], clock: Clock, *, names: Sequence[str],
                 timeout_ms: int, mismatch: Callable[[Any, Any, int], Any] | None = None,
                 cache_max_entries: int = 100_000,
                 now_ms: Callable[[], int] = wall_clock_ms) -> None:
        names = list(names)
        if len(names) < 2 or len(set(names)) != len(names):
            raise ValueError(f"reconcile needs at least two distinct side names, got {names}")
        clash = RESERVED_SIDE_NAMES.intersection(names)
        if clash:
            raise ValueError(f"side name {sorted(clash)[0]!r} is a field of every reconcile result")
        if timeout_ms <= 0:
            raise ValueError(f"reconcile timeout must be positive, got {timeout_ms}")
        super().__init__(name, store_name, self._on_record, self._on_timeout, key_encode,
                         key_decode, clock, cache_max_entries, now_ms)
        self.names = names
        self.timeout_ms = timeout_ms
        self.mismatch = mismatch

    def _on_record(self, ctx: Any, key: Any, value: Any) -> None:
        names = self.names
        side, v = side_value(value, len(names))
        if v is None:
            return
        state = ctx.state.value(_GROUP)
        group = state.get()  # a fresh copy: changing it changes nothing until set()
        ts = ctx.timestamp
        if group is None:
            t0, values, repeats = ts, [None] * len(names), [0] * len(names)
        else:
            t0, values, repeats = group
        if values[side] is not None:
            repeats[side] += 1
        values[side] = v
        if None in values:
            # everything that can fail (the deadline's range, serializing) comes before a change
            deadline = check_timestamp(t0 + self.timeout_ms)
            state.set([t0, values, repeats])
            if group is None:
                ctx.timers.register_event_time(deadline)
            return
        sides = dict(zip(names, values, strict=True))
        mismatch = self.mismatch
        # the expression runs before any change: if it raises, this record changed nothing
        status = "mismatched" if mismatch is not None and mismatch(key, sides, ts) else "matched"
        if group is not None:
            state.clear()
            ctx.timers.delete_event_time(t0 + self.timeout_ms)
        ctx.emit(self._result(key, status, [], sides, repeats))

    def _on_timeout(self, ctx: Any, key: Any, ts: int) -> None:
        state = ctx.state.value(_GROUP)
        group = state.get()
        if group is None:
            return
        _, values, repeats = group
        names = self.names
        missing = [n for n, v in zip(names, values, strict=True) if v is None]
        sides = dict(zip(names, values, strict=True))
        state.clear()
        ctx.emit(self._result(key, "incomplete", missing, sides, repeats), timestamp=ts)

    def _result(self, key: Any, status: str, missing: list[str], sides: dict[str, Any],
                repeats: list[int]) -> dict[str, Any]:
        out = {"key": key, "status": status, "missing": missing, **sides}
        if any(repeats):
            out["repeats"] = {n: r for n, r in zip(self.names, repeats, strict=True) if r}
        return out
