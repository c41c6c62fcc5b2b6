"""The open groups of a reconcile: one store entry per group, groups in memory, and the expiry
index (operators/expiry_index.py) of their deadlines instead of a stored timer per group.

Store layout (changelogged like every store):

    g <len(key) 4 bytes> <key bytes>  ->  <pack_ts(deadline)> <JSON [t0, [value | null per
                                          side], [repeats per side]]>

A group's deadline (t0 + timeout) is fixed when it opens, so it keeps it when the timeout
changes. The index is built from the store by one scan at the first use after a bind or a
discard; the group cache is trimmed after a commit once it holds more than `cache_max_entries`.
"""

from __future__ import annotations

from typing import Any

import orjson

from processor.operators.base import KeyFamilyError, StoreKeys, Writes
from processor.operators.expiry_index import ExpiryIndex
from processor.state.keys import pack_ts, unpack_ts

STATE_FORMAT = "groups-1"
"""Recorded in the store's layout (graph/layout.py): the process-function format before it had
none, so a worker refuses a store written in it (graph/compat.py) instead of misreading it."""
FAMILY = b"g"
_END = bytes((FAMILY[0] + 1,))

Group = list[Any]
"""[t0, deadline, [value as JSON | None per side], [repeats per side], in the store (or in a
flush on its way there)]."""
T0, DEADLINE, VALUES, REPEATS, STORED = range(5)


def _store_key(kb: bytes) -> bytes:
    return FAMILY + len(kb).to_bytes(4, "big") + kb


def record_key(store_key: bytes) -> bytes | None:
    """The record key of an entry `g <len> <key>`; the family has no bookkeeping entry."""
    if store_key[:1] != FAMILY or len(store_key) < 5:
        raise KeyFamilyError(f"{store_key[:1]!r} is no family of a reconcile store")
    return store_key[5:5 + int.from_bytes(store_key[1:5], "big")]


STORE_KEYS = StoreKeys("g<len><key>", record_key)


def _encode(g: Group) -> bytes:
    values = b",".join(b"null" if v is None else v for v in g[VALUES])
    return (pack_ts(g[DEADLINE]) + b"[" + str(g[T0]).encode() + b",[" + values + b"],"
            + orjson.dumps(g[REPEATS]) + b"]")


def _decode(raw: bytes) -> Group:
    t0, values, repeats = orjson.loads(raw[8:])
    return [t0, unpack_ts(raw[:8]), [None if v is None else orjson.dumps(v) for v in values],
            repeats, True]


class GroupState:
    """The open groups of a reconcile over its store (see the module docstring). It only reads
    the store: `flush` returns the changes since the last flush as changelog writes."""

    def __init__(self, cache_max_entries: int) -> None:
        self.cache_max_entries = cache_max_entries
        self.store: Any = None
        self.reset()

    def reset(self) -> None:
        """Forget everything not committed: the store is the truth again."""
        self._groups: dict[bytes, Group] = {}  # cached open groups
        self._writes: dict[bytes, Group | None] = {}  # key bytes -> changed group, None: gone
        self._index: ExpiryIndex | None = None

    def bind(self, store: Any) -> None:
        self.store = store
        self.reset()

    def index(self) -> ExpiryIndex:
        """The deadline index, built from the store by one scan on first use."""
        index = self._index
        if index is None:
            index = self._index = ExpiryIndex()
            for sk, raw in self.store.range(FAMILY, _END):
                kb = record_key(sk)
                assert kb is not None
                index.set(kb, unpack_ts(raw[:8]))
        return index

    def get(self, kb: bytes) -> Group | None:
        """Key `kb`'s open group (the live one: change it through put/remove), or None."""
        g = self._groups.get(kb)
        if g is None and kb in self.index().next:
            raw = self.store.get(_store_key(kb))
            assert raw is not None, "an indexed group is in the store"
            g = self._groups[kb] = _decode(raw)
        return g

    def put(self, kb: bytes, g: Group) -> None:
        """Open (a new group of `kb`, g[STORED] False) or change a group."""
        if not g[STORED] and kb in self._writes and self._writes[kb] is None:
            g[STORED] = True  # the store still holds the group reported before it
        self._groups[kb] = g
        self._writes[kb] = g
        index = self.index()
        if index.next.get(kb) != g[DEADLINE]:
            index.set(kb, g[DEADLINE])

    def remove(self, kb: bytes, g: Group) -> None:
        """The group was reported: it goes."""
        self._groups.pop(kb, None)
        self.index().remove(kb)
        if g[STORED]:
            self._writes[kb] = None
        else:
            self._writes.pop(kb, None)  # never written: nothing to delete

    def flush(self) -> Writes:
        writes: Writes = {}
        for kb, g in self._writes.items():
            if g is None:
                writes[_store_key(kb)] = None
            else:
                writes[_store_key(kb)] = _encode(g)
                g[STORED] = True
        self._writes = {}
        return writes

    def committed(self) -> None:
        if len(self._groups) > self.cache_max_entries:
            self.trim()

    def cached_count(self) -> int:
        return len(self._groups)

    def trim(self) -> None:
        """Forget the cached groups (the store holds them all) unless writes are unflushed."""
        if not self._writes:
            self._groups = {}

    def pending(self) -> int:
        """Open groups in the committed store: each reports at its deadline at the latest."""
        return sum(1 for _ in self.store.range(FAMILY, _END))
