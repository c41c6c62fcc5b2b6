"""RocksDB materialization of table partitions: the latest raw value per raw key.

A table's source topic is its own log (no changelog), so the store holds just the data and, per
partition, the next source offset it does not reflect. Both are written in ONE WriteBatch
(`apply`): after a crash the store is always a prefix of the topic and following resumes at
the recorded offsets.

Data lives in the default column family with the raw key as is, metadata in a `meta` column
family: table keys are arbitrary bytes, so no key can collide with metadata, and `get` can be
RocksDB's own bound `get` with no Python frame or key prefixing in between (join lookups are
the hot path: ~0.1 µs less per hit, ~0.1 µs less per miss of ~0.2-0.5 µs). A bloom filter
makes misses (records without a table row) cheap.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rocksdict import Options, Rdict, WriteBatch

from processor.state.memory import StateMemory, store_options

_META_CF = "meta"
_OFFSET = b"next_offset/"


def _options(memory: StateMemory | None) -> Options:
    opts = store_options(memory)
    opts.create_missing_column_families(True)
    return opts


class TableStore:
    """One directory per materialized table (partition set): `get` by raw key, offsets in meta."""

    def __init__(self, path: Path, memory: StateMemory | None = None) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self._db = Rdict(str(path), options=_options(memory),
                         column_families={_META_CF: _options(memory)})
        self._meta: Any = self._db.get_column_family(_META_CF)
        self._meta_cf: Any = self._db.get_column_family_handle(_META_CF)
        # the hot path: the C-level lookup itself, shadowing the method below
        self.get = self._db.get  # type: ignore[method-assign]
        # raw values (None = no row) of recently joined keys: a dict hit costs ~0.05 µs
        # against ~2 µs for a RocksDB hit. `apply` drops the keys it writes, so the cache is
        # never staler than the store; readers clear it when it passes `cache_max_entries`.
        self.cache: dict[bytes, bytes | None] = {}
        self.cache_max_entries = 200_000

    def get(self, key: bytes) -> bytes | None:  # replaced per instance by Rdict.get
        """The latest value of `key`, None when absent or tombstoned."""
        return self._db.get(key)

    def apply(self, writes: dict[bytes, bytes | None], offsets: dict[int, int]) -> None:
        """Write data (None = tombstone: delete) and the partitions' next offsets atomically."""
        batch = WriteBatch(raw_mode=True)
        cache = self.cache
        for key, value in writes.items():
            cache.pop(key, None)
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        for partition, offset in offsets.items():
            batch.put(_OFFSET + str(partition).encode(), str(offset).encode(), self._meta_cf)
        self._db.write(batch)

    def offsets(self) -> dict[int, int]:
        """Partition -> next source offset to read (partitions never written are absent)."""
        out = {}
        for key, value in self._meta.items(from_key=_OFFSET):
            if not key.startswith(_OFFSET):
                break
            out[int(key[len(_OFFSET):])] = int(value)
        return out

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """All (key, value) entries in key order (tests, debugging, broadcast reload)."""
        return self._db.items()

    def approximate_keys(self) -> int:
        """RocksDB's estimate of the key count (cheap; tombstones make it approximate)."""
        return self._db.property_int_value("rocksdb.estimate-num-keys") or 0

    def stats(self) -> tuple[int, int]:
        """(estimated keys, estimated live bytes), like RocksStore.stats, for the state gauges."""
        db = self._db
        size = ((db.property_int_value("rocksdb.estimate-live-data-size") or 0)
                + (db.property_int_value("rocksdb.cur-size-all-mem-tables") or 0))
        return self.approximate_keys(), size

    def close(self) -> None:
        # the column family objects keep the DB (and its LOCK) alive: drop them first
        self._meta = self._meta_cf = None
        self._db.close()

    @staticmethod
    def wipe(path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)
