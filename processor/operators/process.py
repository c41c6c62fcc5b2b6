"""`process`: a keyed process function with state and timers (like Flink's KeyedProcessFunction).

`fn(ctx, key, value)` is called for every record — tombstones (value None) included, so a
function can react to deletes — and `on_timer(ctx, key, timestamp)` when a timer of the key
fires. `ctx` (operators/context.py) carries the key, event time, offset and watermark, named
keyed state (`ctx.state.value/list/map(name)`), timers (`ctx.timers`) and `ctx.emit(...)`.

Store layout (one RocksStore per (store, partition); values are orjson):

    s <kind> <len(name)> <name utf-8> <key bytes>   -> state; kind v = value, l = list (JSON
                                                       array), m = map (array of [k, v] pairs)
    t <domain> <pack_ts(ts)> <key bytes>             -> b"" ; domain e = event time,
                                                       p = processing time

Empty state is never stored: clearing a value, list or map deletes its entry. Timers sort by
time inside their domain, so "every timer due at T" is one range scan from `t<domain>` to
`t<domain> pack_ts(T + 1)`; ties fire in key-byte order.

Like an aggregate, the operator only reads the store. Changes are kept in memory — a
read-through state cache plus the timer registrations and deletions since the last commit —
and flush() hands every change since the previous flush to the task as changelog writes; the
task applies them after the Kafka commit and calls committed(). Timers are therefore
checkpointed and restored with the state, and fire after a restore (due processing-time timers
on the first on_processing_time call).

Event time is deterministic: before record i, every event-time timer with ts <= the watermark
before record i fires (its emissions carry the offset of the record before i), then record i is
processed; on_watermark(w, offset) fires what is due at the end of a batch or after an idle
advance. Timers registered while firing, for a time already due, fire in the same loop.
Processing-time timers fire only in on_processing_time (the runtime calls it every commit
interval). Without `on_timer` a step cannot register timers, and never scans for them: timers
stored by an earlier version of the step that had one stay dormant.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from heapq import heapify, heappop, heappush
from typing import Any

from processor.operators.base import (
    CACHED_ENTRY_BYTES,
    Batch,
    KeyFamilyError,
    LateRecord,
    ProcessingTimeOperator,
    Record,
    StepFailed,
    StoreKeys,
    failed_at,
)
from processor.operators.context import (
    DOMAIN_NAMES,
    EVENT_TIME,
    PROCESSING_TIME,
    Context,
    ProcessHost,
    check_timestamp,
    decode_state,
    encode_state,
)
from processor.state.keys import pack_ts, unpack_ts
from processor.timeutil.watermark import Clock

_STATE, _TIMER = b"s", b"t"


def record_key(store_key: bytes) -> bytes | None:
    """The key of a state entry `s <kind> <len> <name> <key>` or a timer `t <domain> <ts> <key>`;
    there is no bookkeeping entry."""
    family = store_key[:1]
    if family == _STATE and len(store_key) >= 3:
        return store_key[3 + store_key[2]:]
    if family == _TIMER and len(store_key) >= 10:
        return store_key[10:]
    raise KeyFamilyError(f"{family!r} is no family of a process store")


STORE_KEYS = StoreKeys("s<kind><len><name><key>, t<domain><ts><key>", record_key)
_UNSCANNED = -(1 << 63)  # "the store's next timer is unknown": scan at the next firing point
_NONE_LEFT = 1 << 63  # no stored timer beyond the last scan
_MISSING: Any = object()
_DOMAINS = (EVENT_TIME, PROCESSING_TIME)


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class ProcessFunction(ProcessingTimeOperator, ProcessHost):
    """Keyed process function over a changelogged store; same lifecycle as `Aggregate`.
    Its public face for `ctx` (ProcessHost): `out`, state_key, cached_state, set_state,
    state_changed, register_timer, delete_timer, processing_time."""

    def __init__(self, name: str, store_name: str, fn: Callable[..., Any],
                 on_timer: Callable[..., Any] | None,
                 key_encode: Callable[[Any], bytes | None], key_decode: Callable[[bytes], Any],
                 clock: Clock, cache_max_entries: int = 100_000,
                 now_ms: Callable[[], int] = wall_clock_ms) -> None:
        self.name = name
        self.store_name = store_name
        self.fn = fn
        self.on_timer = on_timer
        self.key_encode = key_encode
        self.key_decode = key_decode
        self.clock = clock
        self.cache_max_entries = cache_max_entries
        self.now_ms = now_ms
        self.store: Any = None
        self.skip_below = -1
        self.late: list[LateRecord] = []  # a process function never drops late records itself
        self.late_count = 0
        self.ctx = Context(self)
        self._prefixes: dict[tuple[bytes, str], bytes] = {}
        self._kb: bytes | None = None  # key bytes of the call in progress
        self.out: Batch = []
        self._now: int | None = None  # processing time of an on_processing_time call
        self._firing: tuple[bytes, int, list[tuple[int, bytes]], set[bytes]] | None = None
        self._reset()

    def _reset(self) -> None:
        # state: store key -> cached form (context.decode_state); whether the store (with
        # flushed, uncommitted writes) holds it, when known; keys changed since the last flush
        self._cache: dict[bytes, Any] = {}
        self._base: dict[bytes, bool] = {}
        self._dirty: set[bytes] = set()
        # timers: store key -> alive, changed since the last flush / flushed but not committed
        self._timers: dict[bytes, bool] = {}
        self._flushed: dict[bytes, bool] = {}
        # registrations not committed yet, per domain: heaps of (ts, key bytes), lazily pruned
        self._pending: dict[bytes, list[tuple[int, bytes]]] = {d: [] for d in _DOMAINS}
        self._rescan()
        self._last_offset = -1

    def _rescan(self) -> None:
        """The store changed: its timers must be scanned again from the start of each domain.
        `_scan_from`: stored timers below it were all seen; `_store_next`: the first above."""
        self._scan_from = dict.fromkeys(_DOMAINS, _UNSCANNED)
        self._store_next = dict.fromkeys(_DOMAINS, _UNSCANNED)

    # -- lifecycle ---------------------------------------------------------------------------

    def bind(self, store: Any, skip_below: int = -1) -> None:
        self.store = store
        self.skip_below = skip_below
        self._rescan()

    def flush(self) -> tuple[Batch, dict[bytes, bytes | None]]:
        """([], changelog writes for every state and timer change since the last flush)."""
        writes: dict[bytes, bytes | None] = {}
        cache, base = self._cache, self._base
        for sk in self._dirty:
            raw = encode_state(sk[1:2], cache[sk])
            if raw is not None:
                writes[sk] = raw
                base[sk] = True
                continue
            had = base.get(sk)
            if had is None:  # written blind, never read: only the store knows
                had = self.store.get(sk) is not None
            if had:
                writes[sk] = None
            base[sk] = False
        self._dirty = set()
        for sk, alive in self._timers.items():
            writes[sk] = b"" if alive else None
        self._flushed.update(self._timers)
        self._timers = {}
        return [], writes

    def committed(self) -> None:
        """The flushed writes are in the store: forget them, trim the cache."""
        self._flushed = {}
        for d in _DOMAINS:  # the committed registrations are found by the next store scan
            heap = [(unpack_ts(sk[2:10]), sk[10:]) for sk, alive in self._timers.items()
                    if alive and sk[1:2] == d]
            heapify(heap)
            self._pending[d] = heap
        self._rescan()
        if len(self._cache) > self.cache_max_entries:
            self.trim_cache()

    def cache_bytes(self) -> int:
        return len(self._cache) * CACHED_ENTRY_BYTES

    def trim_cache(self) -> None:
        self._cache = {sk: self._cache[sk] for sk in self._dirty}
        self._base = {sk: b for sk in self._dirty if (b := self._base.get(sk)) is not None}

    def discard(self) -> None:
        """Forget uncommitted work (dirty close): the store is the truth again."""
        self._reset()

    # -- records and time ----------------------------------------------------------------------

    def process(self, batch: Batch) -> Batch:
        out: Batch = []
        if not batch:
            return out
        self.out = out
        marks = self.clock.watermarks_for(batch)
        ctx, fn, enc, skip = self.ctx, self.fn, self.key_encode, self.skip_below
        timers = self.on_timer is not None
        prev = self._last_offset
        record: Record
        for record, wm in zip(batch, marks, strict=True):
            k, v, t, o = record
            if o < skip:
                prev = o
                continue  # already reflected in the restored store
            if timers and self._due(EVENT_TIME, wm):
                self._fire(EVENT_TIME, wm, wm, prev if prev >= 0 else o - 1)
            try:
                kb = enc(k)
                if kb is None:
                    raise ValueError("record key is null; a process function needs a key (use key_by)")
                self._kb = kb
                ctx.key, ctx.timestamp, ctx.offset, ctx.watermark, ctx.time_domain = k, t, o, wm, None
                fn(ctx, k, v)
            except Exception as exc:
                self._last_offset = prev  # emissions and state changes before the raise stay
                raise failed_at(self.name, batch, record, exc, out) from exc
            finally:
                self._kb = None
            prev = o
        self._last_offset = prev
        return out

    def on_watermark(self, watermark: int, offset: int) -> Batch:
        """Fire the event-time timers due at `watermark`; their emissions carry `offset`."""
        out: Batch = []
        self.out = out
        if self.on_timer is not None and self._due(EVENT_TIME, watermark):
            self._fire(EVENT_TIME, watermark, watermark, offset)
        self._last_offset = max(self._last_offset, offset)
        return out

    def pending(self) -> dict[str, int]:
        if self.store is None:
            return {}
        return {f"{DOMAIN_NAMES[d]} timers":
                sum(1 for _ in self.store.range(_TIMER + d, _TIMER + bytes((d[0] + 1,))))
                for d in _DOMAINS}

    def on_processing_time(self, now_ms: int, offset: int) -> Batch:
        """Fire the processing-time timers due at `now_ms` (wall clock, epoch ms)."""
        out: Batch = []
        self.out = out
        if self.on_timer is not None and self._due(PROCESSING_TIME, now_ms):
            self._now = now_ms
            try:
                self._fire(PROCESSING_TIME, now_ms, self.clock.current, offset)
            finally:
                self._now = None
        self._last_offset = max(self._last_offset, offset)
        return out

    # -- timers ------------------------------------------------------------------------------

    def _due(self, d: bytes, limit: int) -> bool:
        """May a timer of domain d be due at `limit`? (False is certain, True is a maybe.)"""
        pending = self._pending[d]
        return self._store_next[d] <= limit or (bool(pending) and pending[0][0] <= limit)

    def _scan_store(self, d: bytes, limit: int, into: dict[bytes, tuple[int, bytes]]) -> None:
        prefix = _TIMER + d
        nxt = _NONE_LEFT
        for sk, _ in self.store.range(prefix + pack_ts(self._scan_from[d])):
            if not sk.startswith(prefix):
                break
            ts = unpack_ts(sk[2:10])
            if ts > limit:
                nxt = ts
                break
            into[sk] = (ts, sk[10:])
        self._scan_from[d] = max(self._scan_from[d], limit + 1)
        self._store_next[d] = nxt

    def _fire(self, d: bytes, limit: int, watermark: int, offset: int) -> None:
        """Fire every live timer of domain d with ts <= limit, in (ts, key bytes) order."""
        found: dict[bytes, tuple[int, bytes]] = {}
        if self._store_next[d] <= limit:
            self._scan_store(d, limit, found)
        pending = self._pending[d]
        prefix = _TIMER + d
        while pending and pending[0][0] <= limit:
            ts, kb = heappop(pending)
            found[prefix + pack_ts(ts) + kb] = (ts, kb)
        if not found:
            return
        heap = list(found.values())
        heapify(heap)
        queued = set(found)
        ctx, on_timer, domain = self.ctx, self.on_timer, DOMAIN_NAMES[d]
        assert on_timer is not None
        self._firing = (d, limit, heap, queued)
        try:
            while heap:
                ts, kb = heappop(heap)
                sk = prefix + pack_ts(ts) + kb
                queued.discard(sk)
                alive, base = self._timer(sk)
                if not alive:
                    continue  # deleted, or already fired
                self._set_timer(sk, False, base)
                key: Any = None
                try:
                    key = self.key_decode(kb)
                    self._kb = kb
                    ctx.key, ctx.timestamp, ctx.offset, ctx.watermark = key, ts, offset, watermark
                    ctx.time_domain = domain
                    on_timer(ctx, key, ts)
                except Exception as exc:
                    for item in heap:  # not fired yet: due again at the next call
                        heappush(pending, item)
                    failed = StepFailed(self.name, (key, None, ts, offset), exc, partial=self.out)
                    failed.retry = True  # this timer is gone: calling again fires the rest
                    raise failed from exc
                finally:
                    self._kb = None
        finally:
            self._firing = None

    def _timer(self, sk: bytes) -> tuple[bool, bool]:
        """(alive now, alive in the store + flushed writes)."""
        base = self._flushed.get(sk)
        if base is None:
            base = self.store.get(sk) is not None
        return self._timers.get(sk, base), base

    def _set_timer(self, sk: bytes, alive: bool, base: bool) -> None:
        if alive == base:
            self._timers.pop(sk, None)  # back to what the store holds: nothing to write
        else:
            self._timers[sk] = alive

    def register_timer(self, d: bytes, ts: Any) -> None:
        if self.on_timer is None:
            raise ValueError("registering a timer needs `on_timer:` in the process step "
                             "(the function its timers call)")
        ts = check_timestamp(ts)
        kb = self._current_kb()
        sk = _TIMER + d + pack_ts(ts) + kb
        if self._timers.get(sk):
            return  # registered since the last flush already (no store read)
        alive, base = self._timer(sk)
        if alive:
            return  # one timer per (key, domain, ts)
        self._set_timer(sk, True, base)
        firing = self._firing
        if firing is not None and firing[0] == d and ts <= firing[1]:
            if sk not in firing[3]:  # already due: fires in the loop in progress
                heappush(firing[2], (ts, kb))
                firing[3].add(sk)
        else:
            heappush(self._pending[d], (ts, kb))

    def delete_timer(self, d: bytes, ts: Any) -> None:
        ts = check_timestamp(ts)
        sk = _TIMER + d + pack_ts(ts) + self._current_kb()
        alive, base = self._timer(sk)
        if alive:
            self._set_timer(sk, False, base)  # a heap entry left behind is skipped when popped

    def processing_time(self) -> int:
        return self._now if self._now is not None else self.now_ms()

    # -- state ---------------------------------------------------------------------------------

    def _current_kb(self) -> bytes:
        if self._kb is None:
            raise RuntimeError("state and timers are only available during fn/on_timer calls")
        return self._kb

    def state_key(self, kind: bytes, name: str) -> bytes:
        prefix = self._prefixes.get((kind, name))
        if prefix is None:
            if not isinstance(name, str):
                raise TypeError(f"a state name must be a string, got {type(name).__name__}")
            raw = name.encode()
            if not 0 < len(raw) < 256:
                raise ValueError(f"a state name must be 1 to 255 bytes long, got {name!r}")
            prefix = self._prefixes[(kind, name)] = _STATE + kind + bytes((len(raw),)) + raw
        return prefix + self._current_kb()

    def cached_state(self, sk: bytes) -> Any:
        """The cached form of state `sk`, read through from the store."""
        obj = self._cache.get(sk, _MISSING)
        if obj is _MISSING:
            raw = self.store.get(sk)
            if sk not in self._base:
                self._base[sk] = raw is not None
            obj = self._cache[sk] = decode_state(sk[1:2], raw)
        return obj

    def set_state(self, sk: bytes, obj: Any) -> None:
        self._cache[sk] = obj
        self._dirty.add(sk)

    def state_changed(self, sk: bytes) -> None:
        self._dirty.add(sk)
