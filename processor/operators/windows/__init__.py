"""Event-time window operators: tumbling, hopping, sliding, session and count windows.

A window step and the aggregate after it run as one operator. Semantics (also in the README):
the watermark W is the largest event time seen minus max_out_of_orderness; a time window
[start, end) is closed once W >= end + allowed_lateness, and closed windows never change again.
Before each record, every window due at the watermark *before that record* closes; the record
is late if none of its windows is still open. emit=final sends one result per window when it
closes, emit=updates one per change. The store layout is in base.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from processor.errors import ExpressionError
from processor.operators.aggregate import CompiledAggregation
from processor.operators.windows.base import WindowOperator
from processor.operators.windows.count import CountWindows
from processor.operators.windows.fixed import FixedWindows
from processor.operators.windows.session import SessionWindows
from processor.operators.windows.sliding import SlidingWindows
from processor.timeutil.watermark import Clock

__all__ = [
    "CountWindows", "FixedWindows", "SessionWindows", "SlidingWindows",
    "WindowOperator", "build_window_operator",
]


def build_window_operator(name: str, store_name: str, spec: Any, agg: CompiledAggregation,
                          key_encode: Callable[[Any], bytes | None],
                          key_decode: Callable[[bytes], Any], clock: Clock,
                          cache_max_entries: int = 100_000) -> WindowOperator:
    """The operator for a `WindowSpec` followed by the compiled aggregation `agg`.

    Raises ExpressionError when the aggregation cannot run in these windows (a session window
    needs `merge` for every python reducer)."""
    args = (name, store_name, spec, agg, key_encode, key_decode, clock, cache_max_entries)
    kind = spec.kind
    if kind == "tumbling":
        return FixedWindows(*args, size=spec.tumbling, advance=spec.tumbling)
    if kind == "hopping":
        return FixedWindows(*args, size=spec.hopping.size, advance=spec.hopping.advance)
    if kind == "sliding":
        return SlidingWindows(*args, span=spec.sliding)
    if kind == "session":
        return SessionWindows(*args, gap=spec.session.gap)
    if kind == "count":
        return CountWindows(*args, size=spec.count.size, slide=spec.count.slide or spec.count.size)
    raise ExpressionError(f"unknown window kind {kind!r}")
