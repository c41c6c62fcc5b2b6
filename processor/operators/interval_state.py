"""The buffered records of an interval join: one store entry per record, an in-memory index of
when each key's next record expires.

A join touches its state twice per record: it matches the record against the other side's
records of its key and appends it; later, when the watermark passes a record's expiry, it drops
it. Both are served from memory: the records of a key are loaded once (one prefix scan, or
nothing when the index says the key holds none) and kept in arrival order; the expiry index
(operators/expiry_index.py) maps each key holding records to its earliest expiry and hands out
the due keys in (expiry, key bytes) order without any store scan per record. The store stays the truth: the
index is built from it by one scan of the family at the first use after bind or discard, and
the key cache is trimmed after a commit once it holds more than `cache_max_entries` records.

Store layout (one entry per buffered record, changelogged like every store):

    i <len(key) 4 bytes> <key bytes> <side> <pack_ts(offset)> <n 4 bytes>
        -> <pack_ts(ts)> <pack_ts(expiry)> <matched 0|1> <value as JSON>

Entries of a key and side sort by input offset, i.e. in arrival order (n keeps records that
share an offset apart, in arrival order too), so a key read back from the store matches in the
same order as before it left the cache. The expiry is fixed when the record arrives: a record
keeps it when the join's bounds change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from processor.operators.base import KeyFamilyError, StoreKeys, Writes
from processor.operators.expiry_index import ExpiryIndex
from processor.state.keys import unpack_ts

STATE_FORMAT = "records-1"
"""Recorded in the store's layout (graph/layout.py): the map-state format before it had none,
so a worker refuses a store written in it (graph/compat.py) instead of misreading it."""
FAMILY = b"i"
_END = bytes((FAMILY[0] + 1,))
_HEAD = 17  # value header: ts, expiry, matched


Buffered = tuple[int, int, int, bytes, bytes]
"""One buffered record: (ts, expiry, matched 0|1, value as JSON, store key). A tuple of atoms
(the collector stops tracking it); marking it matched replaces it in its key's list."""
TS, EXPIRY, MATCHED, RAW, SK = range(5)
Sides = list[list[Buffered]]  # a key's records per side, in arrival order
Expired = Callable[[bytes, int, Buffered], None]  # (key bytes, side, record) leaving the buffer
_BIAS = 1 << 63
_SIDE = (b"\x00", b"\x01")  # a side's (or a flag's) byte
_FIRST = bytes(4)  # n of the first record of an offset


def _key_prefix(kb: bytes) -> bytes:
    return FAMILY + len(kb).to_bytes(4, "big") + kb


def record_key(store_key: bytes) -> bytes | None:
    """The record key of an entry `i <len> <key> ...`; the family has no bookkeeping entry."""
    if store_key[:1] != FAMILY or len(store_key) < 5:
        raise KeyFamilyError(f"{store_key[:1]!r} is no family of an interval join store")
    n = int.from_bytes(store_key[1:5], "big")
    return store_key[5:5 + n]


STORE_KEYS = StoreKeys("i<len><key><side><offset><n>", record_key)


def _decode(sk: bytes, raw: bytes) -> Buffered:
    return (unpack_ts(raw[:8]), unpack_ts(raw[8:16]), raw[16], raw[_HEAD:], sk)


class IntervalState:
    """The records a join holds, per key and side, over its store (see the module docstring).
    Like every operator state it only reads the store: `flush` returns the changes since the
    last flush as changelog writes, which the task applies with the checkpoint."""

    def __init__(self, cache_max_entries: int) -> None:
        self.cache_max_entries = cache_max_entries
        self.store: Any = None
        self.reset()

    def reset(self) -> None:
        """Forget everything not committed: the store is the truth again."""
        self._keys: dict[bytes, Sides] = {}  # the cached keys (their records, loaded in full)
        self._cached = 0  # records in the cached keys
        self._new: dict[bytes, Buffered] = {}  # added since the last flush: not in the store
        self._changed: dict[bytes, Buffered | None] = {}  # stored ones changed since: None = gone
        self._index: ExpiryIndex | None = None  # built from the store on first use

    def bind(self, store: Any) -> None:
        self.store = store
        self.reset()

    def index(self) -> ExpiryIndex:
        """The expiry index, built from the store by one scan on first use."""
        index = self._index
        if index is None:
            nxt: dict[bytes, int] = {}
            for sk, raw in self.store.range(FAMILY, _END):
                kb, expiry = record_key(sk), unpack_ts(raw[8:16])
                assert kb is not None
                if expiry < nxt.get(kb, expiry + 1):
                    nxt[kb] = expiry
            index = self._index = ExpiryIndex()
            for kb, e in nxt.items():
                index.set(kb, e)
        return index

    def cached(self, kb: bytes) -> Sides | None:
        """The records of key `kb` if they are in memory (else: records(kb))."""
        return self._keys.get(kb)

    def records(self, kb: bytes) -> Sides:
        """The records of key `kb` per side (the live lists: change them only through here)."""
        sides = self._keys.get(kb)
        if sides is None:
            sides = [[], []]
            if kb in self.index().next:
                prefix = _key_prefix(kb)
                # a key out of the cache has no change waiting: the store holds it all
                for sk, raw in self.store.range(prefix):
                    if not sk.startswith(prefix):
                        break
                    sides[sk[len(prefix)]].append(_decode(sk, raw))
                self._cached += len(sides[0]) + len(sides[1])
            self._keys[kb] = sides
        return sides

    def add(self, kb: bytes, sides: Sides, side: int, ts: int, expiry: int, offset: int,
            raw: bytes, matched: int) -> None:
        """Append a record to key `kb`'s side (`sides` = records(kb), so the index is built)."""
        own = sides[side]
        head = FAMILY + len(kb).to_bytes(4, "big") + kb + _SIDE[side] + (offset + _BIAS).to_bytes(8, "big")
        if own and own[-1][4][:-4] == head:  # records sharing an offset arrive one after another
            sk = head + (int.from_bytes(own[-1][4][-4:], "big") + 1).to_bytes(4, "big")
        else:
            sk = head + _FIRST
        b = (ts, expiry, matched, raw, sk)
        own.append(b)
        self._cached += 1
        self._new[sk] = b
        index = self._index
        assert index is not None  # built by records()
        index.lower(kb, expiry)

    def mark(self, records: list[Buffered], i: int) -> None:
        """Record `records[i]` met a partner."""
        b = records[i]
        b = records[i] = (b[0], b[1], 1, b[3], b[4])
        sk = b[SK]
        if sk in self._new:
            self._new[sk] = b
        else:
            self._changed[sk] = b

    def expire(self, limit: int, emit: Expired) -> None:
        """Drop every record with expiry <= limit, key by key in (expiry, key bytes) order;
        `emit(kb, side, record)` sees each before it goes (left side first, arrival order)."""
        index, new, changed = self.index(), self._new, self._changed
        while (due := index.pop(limit)) is not None:
            expiry, kb = due
            sides = self._keys.get(kb) or self.records(kb)
            first = None
            gone: list[tuple[int, Buffered]] = []
            for side in (0, 1):
                kept = []
                for b in sides[side]:
                    e = b[1]  # EXPIRY
                    if e > expiry:
                        kept.append(b)
                        if first is None or e < first:
                            first = e
                        continue
                    sk = b[4]  # SK
                    if new.pop(sk, None) is None:
                        changed[sk] = None  # in the store: delete it
                    gone.append((side, b))
                sides[side] = kept
            self._cached -= len(gone)
            if first is None:
                index.remove(kb)
                del self._keys[kb]
            else:
                index.set(kb, first)
            for side, b in gone:  # the key's state is settled: a failing emit loses only these
                emit(kb, side, b)

    def flush(self) -> Writes:
        writes: Writes = {}
        for sk, b in self._changed.items():
            writes[sk] = None if b is None else _encode(b)
        for sk, b in self._new.items():
            writes[sk] = _encode(b)
        self._new, self._changed = {}, {}
        return writes

    def committed(self) -> None:
        """The flushed writes are in the store: trim the key cache if it grew too large."""
        if self._cached > self.cache_max_entries:
            self.trim()

    def cached_count(self) -> int:
        return self._cached

    def trim(self) -> None:
        """Forget the cached keys (the store holds them all) unless writes are unflushed."""
        if not self._new and not self._changed:
            self._keys = {}
            self._cached = 0

    def pending(self) -> int:
        """Distinct (key, expiry) pairs in the committed store: the expiries still to come."""
        return len({(record_key(sk), raw[8:16]) for sk, raw in self.store.range(FAMILY, _END)})


def _encode(b: Buffered) -> bytes:
    return (b[0] + _BIAS).to_bytes(8, "big") + (b[1] + _BIAS).to_bytes(8, "big") + _SIDE[b[2]] + b[3]
