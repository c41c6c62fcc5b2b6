"""Where a stateful operator's store values hold aggregate accumulators, and how to reshape them.

An accumulator is a list with one slot group per field, in field order (operators/aggregate.py:
`SLOTS` per function). A savepoint migration (tools/savepoint_migrate.py) that adds a field at
the end or removes one rewrites every accumulator of the store: kept fields keep their slots,
an added field gets its initial slots. The accumulators sit in these store values (orjson, as
the operators write and read them; the window families are listed in operators/windows/base.py):

    aggregate            <key>           -> accumulator
    tumbling, hopping    W <end><start><key> -> accumulator
    session              K <key>         -> [[start, end, accumulator], ...]
    sliding              K <key>         -> [buffer, [[t, accumulator], ...], max t]
    count                C <key>         -> [n, [[index, accumulator, min t, max t], ...]]

Every other entry (window markers `E`, the largest end `M`) is kept byte for byte.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from processor.operators.aggregate import SLOTS, initial_slots

Reshape = Callable[[list[Any]], list[Any]]


def reshaper(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> Reshape:
    """The accumulator rewrite from fields `old` to `new` (layout facts, graph/layout.py
    `aggregate_facts`): fields are matched by name; a field only in `new` starts at its
    initial slots, a field only in `old` is dropped. Raises ValueError on an accumulator whose
    length is not `old`'s."""
    spans: dict[str, tuple[int, int]] = {}
    width = 0
    for f in old:
        n = SLOTS[f["function"]]
        spans[f["name"]] = (width, width + n)
        width += n
    parts: list[tuple[int, int] | list[Any]] = [
        spans[f["name"]] if f["name"] in spans
        else initial_slots(f["function"], f.get("initial")) for f in new]

    def reshape(acc: list[Any]) -> list[Any]:
        if len(acc) != width:
            raise ValueError(f"an accumulator of {len(acc)} slots where the savepoint's fields "
                             f"take {width}")
        out: list[Any] = []
        for part in parts:
            if isinstance(part, tuple):
                out.extend(acc[part[0]:part[1]])
            else:
                out.extend(copy.deepcopy(part))
        return out
    return reshape


def _session(state: list[Any], fn: Reshape) -> list[Any]:
    return [[start, end, fn(acc)] for start, end, acc in state]


def _sliding(state: list[Any], fn: Reshape) -> list[Any]:
    buffer, windows, latest = state
    return [buffer, [[t, fn(acc)] for t, acc in windows], latest]


def _count(state: list[Any], fn: Reshape) -> list[Any]:
    n, windows = state
    return [n, [[i, fn(acc), lo, hi] for i, acc, lo, hi in windows]]


def _plain(acc: list[Any], fn: Reshape) -> list[Any]:
    return fn(acc)


_BY_WINDOW: dict[str, tuple[bytes, Callable[[Any, Reshape], Any]]] = {
    "tumbling": (b"W", _plain), "hopping": (b"W", _plain), "session": (b"K", _session),
    "sliding": (b"K", _sliding), "count": (b"C", _count)}


def entry_rewriter(facts: dict[str, Any], fn: Reshape) -> tuple[bytes, Callable[[Any], Any]]:
    """For a store of layout `facts` (an `aggregate` or a `window` operator): the key prefix of
    the entries holding accumulators, and the rewrite of such an entry's decoded value that
    passes every accumulator in it through `fn` (its result is encoded with orjson, as the
    operator writes it)."""
    if facts["operator"] == "aggregate":
        return b"", fn
    prefix, walk = _BY_WINDOW[facts["window"]["kind"]]
    return prefix, lambda value: walk(value, fn)
