"""The buffered records of an interval join: one store entry per record, an in-memory index of
when each key's next record expires.

A join touches its state twice per record: it matches the record against the other side's
records of its key and appends it; later, when the watermark passes a record's expiry, it drops
it. Both are served from memory: the records of a key are loaded once (one prefix scan, or
nothing when the index says the key holds none) and kept in arrival order; the index maps each
key holding records to its earliest expiry, and a heap of (expiry, key) hands out the due keys
in (expiry, key bytes) order without any store scan per record. The store stays the truth: the
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
from heapq import heapify, heappop, heappush
from typing import Any

from processor.operators.base import KeyFamilyError, StoreKeys, Writes
from processor.state.keys import pack_ts, unpack_ts

STATE_FORMAT = "records-1"
"""Recorded in the store's layout (graph/layout.py): the map-state format before it had none,
so a worker refuses a store written in it (graph/compat.py) instead of misreading it."""
FAMILY = b"i"
_END = bytes((FAMILY[0] + 1,))
_HEAD = 17  # value header: ts, expiry, matched
_SIDE = (b"\x00", b"\x01")  # a side's (or a flag's) byte


Buffered = list  # one buffered record: [ts, expiry, matched 0|1, value as JSON, store key, stored]
TS, EXPIRY, MATCHED, RAW, SK, STORED = range(6)  # STORED: in the store, or in a flush on its way
_BIAS = 1 << 63


Sides = list[list[Buffered]]  # a key's records per side, in arrival order
Expired = Callable[[bytes, int, Buffered], None]  # (key bytes, side, record) leaving the buffer


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
    return [unpack_ts(raw[:8]), unpack_ts(raw[8:16]), raw[16], raw[_HEAD:], sk, True]


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
        self._writes: dict[bytes, Buffered | None] = {}  # changed since the last flush
        self._next: dict[bytes, int] | None = None  # key -> earliest expiry; None: not built
        self.heap: list[tuple[int, bytes]] = []  # (expiry, key), stale entries skipped

    def bind(self, store: Any) -> None:
        self.store = store
        self.reset()

    def index(self) -> dict[bytes, int]:
        """The expiry index, built from the store by one scan on first use."""
        nxt = self._next
        if nxt is None:
            nxt = {}
            for sk, raw in self.store.range(FAMILY, _END):
                kb, expiry = record_key(sk), unpack_ts(raw[8:16])
                assert kb is not None
                if expiry < nxt.get(kb, expiry + 1):
                    nxt[kb] = expiry
            self.heap = [(e, kb) for kb, e in nxt.items()]
            heapify(self.heap)
            self._next = nxt
        return nxt

    def records(self, kb: bytes) -> Sides:
        """The records of key `kb` per side (the live lists: change them only through here)."""
        sides = self._keys.get(kb)
        if sides is None:
            sides = [[], []]
            if kb in self.index():
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
        """Append a record to key `kb`'s side (`sides` = records(kb))."""
        own = sides[side]
        head = FAMILY + len(kb).to_bytes(4, "big") + kb + _SIDE[side] + (offset + _BIAS).to_bytes(8, "big")
        n = 0
        for b in reversed(own):  # records sharing the offset arrived last
            if not b[SK].startswith(head):
                break
            n += 1
        sk = head + n.to_bytes(4, "big")
        b = [ts, expiry, matched, raw, sk, False]
        own.append(b)
        self._cached += 1
        self._writes[sk] = b
        nxt = self._next
        assert nxt is not None  # built by records()
        if expiry < nxt.get(kb, expiry + 1):
            nxt[kb] = expiry
            heappush(self.heap, (expiry, kb))

    def mark(self, b: Buffered) -> None:
        b[MATCHED] = 1
        self._writes[b[SK]] = b

    def expire(self, limit: int, emit: Expired) -> None:
        """Drop every record with expiry <= limit, key by key in (expiry, key bytes) order;
        `emit(kb, side, record)` sees each before it goes (left side first, arrival order)."""
        nxt, heap = self.index(), self.heap
        while heap and heap[0][0] <= limit:
            expiry, kb = heappop(heap)
            if nxt.get(kb) != expiry:
                continue  # stale: the key's earliest expiry changed since
            sides = self.records(kb)
            first = None
            gone: list[tuple[int, Buffered]] = []
            for side in (0, 1):
                kept = []
                for b in sides[side]:
                    e = b[EXPIRY]
                    if e > expiry:
                        kept.append(b)
                        if first is None or e < first:
                            first = e
                    else:
                        self._drop(b)
                        gone.append((side, b))
                sides[side] = kept
            if first is None:
                del nxt[kb]
                del self._keys[kb]
            else:
                nxt[kb] = first
                heappush(heap, (first, kb))
            for side, b in gone:  # the key's state is settled: a failing emit loses only these
                emit(kb, side, b)

    def _drop(self, b: Buffered) -> None:
        self._cached -= 1
        if b[STORED]:
            self._writes[b[SK]] = None
        else:
            del self._writes[b[SK]]  # never written: nothing to delete

    def flush(self) -> Writes:
        writes: Writes = {}
        for sk, b in self._writes.items():
            if b is None:
                writes[sk] = None
            else:
                writes[sk] = pack_ts(b[TS]) + pack_ts(b[EXPIRY]) + _SIDE[b[MATCHED]] + b[RAW]
                b[STORED] = True
        self._writes = {}
        return writes

    def committed(self) -> None:
        """The flushed writes are in the store: trim the key cache if it grew too large."""
        if self._cached > self.cache_max_entries and not self._writes:
            self._keys = {}
            self._cached = 0

    def pending(self) -> int:
        """Distinct (key, expiry) pairs in the committed store: the expiries still to come."""
        return len({(record_key(sk), raw[8:16]) for sk, raw in self.store.range(FAMILY, _END)})
