"""RocksDB key-value store for one (store, partition), with the checkpoint in the same DB.

Data keys are prefixed `d`, metadata keys `m`. Each checkpoint applies the flushed writes and
the new checkpoint (changelog offset, input position) in ONE WriteBatch, after the Kafka
commit succeeded. The local DB is therefore always a committed prefix of the changelog: a
crash at any point — even kill -9 between the commit and the write — leaves a store that
restores correctly by replaying the changelog from its recorded offset.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

from rocksdict import AccessType, Rdict, WriteBatch

from processor.state.memory import StateMemory, store_options

_DATA = b"d"
_META = b"m"
META_CHANGELOG_OFFSET = "changelog_offset"
META_POSITION = "position"
META_UPSTREAM = "upstream"
META_TIME = "time"
# the identity (Kafka topic id) of the changelog topic the store is a prefix of: a topic deleted
# and re-created (`processor reset`) gets a new one, so the store is known to be stale
META_CHANGELOG_ID = "changelog_id"
META_LAYOUT = "layout"  # the state layout the data was written with (graph/layout.py)


class RocksStore:
    """A store directory: `<state_dir>/<topology>/<store>/<partition>`; with `memory`, its
    block cache and memtables are the worker's shared ones (state/memory.py)."""

    def __init__(self, path: Path, *, read_only: bool = False,
                 memory: StateMemory | None = None) -> None:
        self.path = path
        self._memory = memory
        path.mkdir(parents=True, exist_ok=True)
        access = AccessType.read_only() if read_only else AccessType.read_write()
        self._db = Rdict(str(path), options=store_options(memory), access_type=access)

    def get(self, key: bytes) -> bytes | None:
        return self._db.get(_DATA + key)

    def meta_int(self, name: str) -> int | None:
        raw = self._db.get(_META + name.encode())
        return None if raw is None else int(raw)

    @property
    def upstream(self) -> bytes | None:
        """Repartition de-duplication marks (JSON) matching `position`, if any."""
        return self._db.get(_META + META_UPSTREAM.encode())

    @property
    def time(self) -> bytes | None:
        """Event-time state (JSON, timeutil/watermark.py) matching `position`, if any."""
        return self._db.get(_META + META_TIME.encode())

    @property
    def layout(self) -> bytes | None:
        """The recorded state layout (canonical JSON), None for state from before layouts."""
        return self._db.get(_META + META_LAYOUT.encode())

    @property
    def changelog_offset(self) -> int:
        """Next changelog offset to restore from (0 = replay the whole changelog)."""
        return self.meta_int(META_CHANGELOG_OFFSET) or 0

    @property
    def changelog_id(self) -> str | None:
        """The identity of the changelog topic this store was last restored or written from."""
        raw = self._db.get(_META + META_CHANGELOG_ID.encode())
        return None if raw is None else raw.decode()

    @property
    def position(self) -> int | None:
        """Next input offset not reflected in this store, if known."""
        return self.meta_int(META_POSITION)

    def apply(self, writes: dict[bytes, bytes | None], meta: dict[str, int | bytes]) -> None:
        """Write data and checkpoint metadata atomically. In key order: RocksDB's memtable (a
        skip list) takes ordered inserts faster, ~1.5 against ~2.1 µs a key at a million keys."""
        batch = WriteBatch(raw_mode=True)
        put, delete = batch.put, batch.delete
        for key in sorted(writes):
            value = writes[key]
            if value is None:
                delete(_DATA + key)
            else:
                put(_DATA + key, value)
        for name, value in meta.items():
            batch.put(_META + name.encode(), value if isinstance(value, bytes) else str(value).encode())
        self._db.write(batch)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """All data entries (for tests, describe and the state API)."""
        return self.range(b"")

    def range(self, lo: bytes, hi: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        """Data entries with lo <= key < hi (hi None: to the end), in key order."""
        it = self._db.iter()
        it.seek(_DATA + lo)
        end = _DATA + hi if hi is not None else None
        while it.valid():
            key = it.key()
            if not key.startswith(_DATA) or (end is not None and key >= end):
                break
            yield key[1:], it.value()
            it.next()

    def stats(self) -> tuple[int, int]:
        """(estimated keys, estimated live bytes): RocksDB's own estimates, cheap to read."""
        db = self._db
        keys = db.property_int_value("rocksdb.estimate-num-keys") or 0
        size = ((db.property_int_value("rocksdb.estimate-live-data-size") or 0)
                + (db.property_int_value("rocksdb.cur-size-all-mem-tables") or 0))
        return keys, size

    def close(self) -> None:
        self._db.close()

    def clear(self) -> None:
        """Drop every entry and the checkpoint, in place (the object stays valid): the store is
        empty, as a fresh one restoring its changelog from the beginning."""
        self._db.close()
        self.wipe(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._db = Rdict(str(self.path), options=store_options(self._memory),
                         access_type=AccessType.read_write())

    @staticmethod
    def wipe(path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)
