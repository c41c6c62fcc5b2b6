"""Windows kept per key (session, sliding): one `K <key>` entry holds all of a key's state.

Their windows are found by key (a record must see every open session / sliding window of its
key), so the data is keyed by key; the closing order comes from one marker per key,
`E <pack_ts(min end)> <key> -> b""`, at the earliest end among the key's windows (and, for
sliding windows, the buffer's expiry). The marker moves at flush when that end changes.

In memory a key's entry is `[key, state, marker end written, dirty, scheduled end]`. The end
index holds each key at most at a few ends and at no later than its earliest end: when a pass
reaches the key it closes what is due and reschedules the key at its new earliest end. A key
extending its session on every record therefore costs no index churn.

An entry emptied by closing is deleted at the next flush and dropped from the cache only
after committed(): until then the store still holds the old value and must not be read.
"""

from __future__ import annotations

from typing import Any

import orjson

from processor.operators.base import Batch, KeyFamilyError, StoreKeys
from processor.operators.windows.base import INF, MAX_END, EndIndexed, merge_max_end
from processor.serde.formats import compact_json
from processor.state.keys import pack_ts

KEY, STATE, MARK, DIRTY, SCHED = range(5)
_K, _E = b"K", b"E"


def record_key(store_key: bytes) -> bytes | None:
    """The key of a `K <key>` or `E <end> <key>` entry; None for `M` (bookkeeping)."""
    family = store_key[:1]
    if family == _K:
        return store_key[1:]
    if family == _E and len(store_key) >= 9:
        return store_key[9:]
    if store_key == MAX_END:
        return None
    raise KeyFamilyError(f"{family!r} is no family of a session or sliding window store")


STORE_KEYS = StoreKeys("K<key>, E<end><key>, M", record_key, merge_max_end)


class KeyedWindows(EndIndexed):
    """Per-key state with a lazily scheduled end index. Subclasses define the state."""

    prefix, prefix_end = b"E", b"F"

    def _reset(self) -> None:
        super()._reset()
        self.entries: dict[bytes, list[Any]] = {}
        self.emptied: list[bytes] = []  # keys whose entry may be empty (drop after commit)

    def _cached(self) -> int:
        return len(self.entries)

    def _trim(self) -> None:
        self.entries.clear()
        self.emptied.clear()

    # -- the subclass's state ---------------------------------------------------------------

    def _empty(self) -> Any:
        raise NotImplementedError

    def _min_end(self, state: Any) -> int | None:
        raise NotImplementedError

    def _expire(self, kb: bytes, e: list[Any], bound: int, closing: list[Any]) -> bool:
        """Close the key's windows with end <= bound (append them to `closing`) and drop what
        no open window can need; True if the state changed."""
        raise NotImplementedError

    # -- cache --------------------------------------------------------------------------------

    def _entry(self, kb: bytes, key: Any, schedule: bool = True, read: bool = False) -> list[Any]:
        """Load a key's entry into the cache, from the store if it may hold one (`read`: it
        does, a closing pass found its marker)."""
        raw = self.store.get(_K + kb) if read or self.so_next != INF else None
        if raw is None:
            e = [key, self._empty(), None, False, None]
            self.emptied.append(kb)  # a record fills it; if none does, drop it after commit
        else:
            state = orjson.loads(raw)
            e = [self.key_decode(kb) if key is None else key, state, self._min_end(state),
                 False, None]
            if schedule:
                self._schedule(kb, e)
        self.entries[kb] = e
        return e

    def _schedule(self, kb: bytes, e: list[Any]) -> None:
        """Make sure the index holds the key at no later than its earliest end."""
        m = self._min_end(e[STATE])
        if m is None:
            return
        s = e[SCHED]
        if s is None or m < s or s <= self.closed_through:
            bucket = self.buckets.get(m)
            if bucket is None:
                bucket = self._bucket(m)
            bucket[kb] = None
            e[SCHED] = m

    # -- closing and checkpoints --------------------------------------------------------------

    def _close(self, bound: int, offset: int, out: Batch) -> None:
        popped, stored = self._due(bound)
        kbs: dict[bytes, bool] = {}  # key bytes -> found in the store
        for bucket in popped.values():
            kbs.update(dict.fromkeys(bucket, False))
        for _end, skey, _raw in stored:
            kbs[skey[9:]] = True
        closing: list[Any] = []
        entries, dirty = self.entries, self.dirty
        for kb, in_store in kbs.items():
            e = entries.get(kb)
            if e is None:
                e = self._entry(kb, None, schedule=False, read=in_store)
            if self._expire(kb, e, bound, closing) and not e[DIRTY]:
                e[DIRTY] = True
                dirty.append(kb)
            self._schedule(kb, e)
        self._emit_closed(closing, offset, out)

    def flush(self) -> tuple[Batch, dict[bytes, bytes | None]]:
        writes, self.writes = self.writes, {}
        entries, min_end = self.entries, self._min_end
        mx = self.max_persisted
        for kb in self.dirty:
            e = entries[kb]
            e[DIRTY] = False
            m, old = min_end(e[STATE]), e[MARK]
            if m is None:
                if old is not None:
                    writes[_K + kb] = None
                    writes[_E + pack_ts(old) + kb] = None
            else:
                writes[_K + kb] = compact_json(e[STATE])
                if m != old:
                    if old is not None:
                        writes[_E + pack_ts(old) + kb] = None
                    writes[_E + pack_ts(m) + kb] = b""
                    if m > mx:
                        mx = m
            e[MARK] = m
        self.dirty = []
        self._persisted_max(writes, mx)
        return [], writes

    def committed(self) -> None:
        entries, min_end = self.entries, self._min_end
        keep = []
        for kb in self.emptied:
            e = entries.get(kb)
            if e is None or min_end(e[STATE]) is not None:
                continue
            if e[DIRTY] or e[MARK] is not None:
                keep.append(kb)  # its delete is not in the store yet
            else:
                del entries[kb]
        self.emptied = keep
        super().committed()
