"""The pattern step's operator: one changelogged state per key, woken by the watermark.

It keeps its keys like the session and sliding windows (windows/keyed.py): `K <key>` holds
the key's matcher state (nfa.py: buffered events and partial matches) and `E <ts> <key>` marks
the key at its wake time, the earliest of its first buffered event and its first partial
match's expiry, so a watermark pass visits only the keys with something due. Everything a
window step guarantees follows: changes are flushed as changelog writes at each checkpoint,
a restore or a cache trim reads keys back from the store, and a pass emits in key-byte order.
A key whose buffer and partial matches are empty has no entry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from processor.expressions import BroadcastStates
from processor.operators.base import Batch, DeferredInput, StepFailed
from processor.operators.patterns.nfa import (
    BUF,
    FIRST_TS,
    MATCH,
    PAIRS,
    RUNS,
    Failure,
    Matcher,
    Output,
    new_state,
    offer,
    wake_time,
)
from processor.operators.patterns.program import PatternProgram, compile_pattern
from processor.operators.windows.keyed import DIRTY, KEY, SCHED, STATE, KeyedWindows
from processor.spec.patterns import PatternSpec
from processor.timeutil.watermark import Clock

_K = b"K"


class PatternOperator(KeyedWindows, DeferredInput):
    """Matches a compiled pattern per key. Shares the keyed windows' end index and lifecycle
    (bind, flush, committed, discard); it is no aggregate, so it sets their fields itself."""

    rescan = 0  # a record at the last pass's watermark is not late: its key wakes at that time

    def __init__(self, name: str, store_name: str, prog: PatternProgram,
                 key_encode: Callable[[Any], bytes | None], key_decode: Callable[[bytes], Any],
                 clock: Clock, cache_max_entries: int = 100_000) -> None:
        self.name = name
        self.store_name = store_name
        self.key_encode = key_encode
        self.key_decode = key_decode
        self.clock = clock
        self.cache_max_entries = cache_max_entries
        self.lateness = 0  # a record below the watermark is late
        self.matcher = Matcher(prog)
        self.within = prog.within
        self.late = []
        self.late_count = 0
        self.failed: list[StepFailed] = []
        self.timeouts: Batch = []
        self.timeout_sink = None
        self.store = None
        self.skip_below = -1
        self._reset()

    def discard(self) -> None:
        """Forget uncommitted work, undrained timeouts and failures included."""
        super().discard()
        self.timeouts.clear()
        self.failed.clear()
        self.matches = 0

    def _empty(self) -> list[Any]:
        return new_state()

    def _min_end(self, state: list[Any]) -> int | None:
        return wake_time(state, self.within)

    def pending(self) -> dict[str, int]:
        """Keys with buffered events or partial matches, under the kind the runtime's bounded-run
        report counts (runtime/tasks/open_work.py PATTERN_KEYS)."""
        return {"pattern keys": sum(1 for _ in self.store.range(self.prefix, self.prefix_end))
                } if self.store else {}

    def read(self, store: Any, kb: bytes) -> dict[str, Any]:
        """A key's committed matcher state (queryable): its buffer and partial matches."""
        raw = store.get(_K + kb)
        state = orjson.loads(raw) if raw is not None else new_state()
        names = self.matcher.names
        partial = []
        for run in state[RUNS]:
            stages: dict[str, list[Any]] = {}
            for p in run[PAIRS]:
                stages.setdefault(names[p[0]], []).append(p[3])
            partial.append({"start": run[FIRST_TS], "expires_at": run[FIRST_TS] + self.within,
                            "stages": stages})
        return {"buffered": len(state[BUF]), "partial_matches": partial}

    def process(self, batch: Batch) -> Batch:
        """Buffer the batch's records (late ones aside); the watermark pass at the batch's end
        (on_watermark) matches them. Matching is in event-time order whatever the batch
        boundaries, so passing once per batch, not before every record as windows close, gives
        the same matches and timeouts, stamped with the batch's last offset."""
        if not batch:
            return []
        wms = self.clock.watermarks_for(batch)
        out: Batch = []  # matches come from on_watermark
        skip, enc, entries, dirty, late = self.skip_below, self.key_encode, self.entries, \
            self.dirty, self.late
        record = None
        closed = self.closed_through
        try:
            for record, w in zip(batch, wms, strict=True):
                k, v, t, o = record
                if v is None or o < skip:
                    continue
                kb = enc(k)
                if kb is None:
                    self._no_key()
                if t < w:
                    late.append((record, 0, 0, w))
                    self.late_count += 1
                    continue
                e = entries.get(kb)
                if e is None:
                    e = self._entry(kb, k)
                offer(e[STATE], t, v, o)
                if not e[DIRTY]:
                    e[DIRTY] = True
                    dirty.append(kb)
                s = e[SCHED]  # the index must hold the key by its wake time (keyed.py)
                if s is None or s <= closed or t < s:
                    self._schedule(kb, e)
        except Exception as exc:
            raise self._failed(record, exc, batch=batch, out=out) from exc
        return out

    @staticmethod
    def _no_key() -> None:
        raise ValueError("record key is null; a pattern matches per key (use key_by)")

    def _expire(self, kb: bytes, e: list[Any], bound: int, closing: list[Any]) -> bool:
        """Run the key's matcher up to the watermark `bound`; outputs go to `closing`."""
        key = e[KEY] if e[KEY] is not None else self.key_decode(kb)
        outputs: list[Output] = []
        failed: list[Failure] = []
        changed = self.matcher.advance(key, e[STATE], bound, outputs, failed)
        for kind, value, ts in outputs:
            closing.append((kb, key, kind, value, ts))
        for entry, exc in failed:
            self.failed.append(StepFailed(self.name, (key, entry[2], entry[0], entry[3]), exc))
        if changed and self._min_end(e[STATE]) is None:
            self.emptied.append(kb)
        return changed

    def _emit_closed(self, closing: list[Any], offset: int, out: Batch) -> None:
        """Matches down the chain, timeouts to their topic, in key-byte order (each key's own
        outputs in the order it made them)."""
        if len(closing) > 1:
            closing.sort(key=lambda c: c[0])
        timeouts = self.timeouts
        for _kb, key, kind, value, ts in closing:
            if kind == MATCH:
                out.append((key, value, ts, offset))
                self.matches += 1
            else:
                timeouts.append((key, value, ts, offset))


def build_pattern_operator(name: str, store_name: str, spec: PatternSpec,
                           key_encode: Callable[[Any], bytes | None],
                           key_decode: Callable[[bytes], Any], clock: Clock,
                           cache_max_entries: int = 100_000,
                           broadcast: BroadcastStates | None = None) -> PatternOperator:
    """The operator for a `PatternSpec` (raises ExpressionError for a bad condition)."""
    return PatternOperator(name, store_name, compile_pattern(spec, broadcast), key_encode,
                           key_decode, clock, cache_max_entries)
