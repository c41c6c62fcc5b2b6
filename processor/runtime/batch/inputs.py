"""A file source's rows as the records of its partitions.

A file source plays the topic it would be live on: each row goes to the partition Kafka's
partitioner gives its key (`partitions:` of the source, default 1), in file order, so a
partition sees the rows a producer writing the files in order would have put on it, and a
batch run equals a streaming run over that topic. A record's offset is its row's number in
the whole input (all files, from 0): increasing within a partition, and it names the file and
row in errors (`where`).
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from operator import itemgetter, methodcaller
from pathlib import Path
from typing import Any

from processor.operators import Batch
from processor.runtime.files.paths import expand
from processor.runtime.files.read import read_rows
from processor.spec.topics import SourceSpec
from processor.state.partitioner import partition_for
from processor.timeutil.timestamps import iso_to_ms

CHUNK_ROWS = 1024
"""Rows a source hands its tasks at a time. Small on purpose: each step then sweeps records
still in the CPU caches; W1 over 2M rows took 1.5-2x less CPU time with 1,024 than with 65,536
(and ~75 MB less memory), flat from 256 to 1,024 (benchmarks/batch.py)."""


@dataclass
class BadInput:
    """A row that cannot be a record: unreadable, or without a valid event time."""

    offset: int
    path: Path
    where: str  # `file:line` of an unreadable line, `file, row N` of a row
    raw: bytes
    problem: str


@dataclass
class Chunk:
    """One read of a source: records per partition (offset order) and the bad rows; or, read
    from a topic, messages per partition (the tasks decode them)."""

    records: dict[int, Batch] = field(default_factory=dict)
    messages: dict[int, list[Any]] = field(default_factory=dict)
    bad: list[BadInput] = field(default_factory=list)
    rows: int = 0


class FileFeeder:
    """Reads a `file:` source in chunks, turning rows into `(key, value, timestamp, offset)`."""

    def __init__(self, src: SourceSpec, base: Path, partitions: int,
                 key_encode: Callable[[Any], bytes], chunk_rows: int = CHUNK_ROWS,
                 until: int | None = None) -> None:
        """`until`: only rows with an event time before it (a backfill's history: the live
        topic has the rest); the others are counted in `after_until`."""
        assert src.file is not None
        self.src, self.partitions, self.base, self.chunk_rows = src, partitions, base, chunk_rows
        expand(src.file.path, base, src.file.file_format)  # no such file: said before any work
        if until is not None and src.timestamp is None:
            raise ValueError("a history that ends at a time needs the source's `timestamp:`")
        self.until = until
        self.after_until = 0
        self._key_field = src.file.key
        self._key_encode = key_encode
        self._text_key = src.key.format == "string"
        self._routes: dict[Any, int] = {}
        self._files: list[tuple[int, Path]] = []  # (offset of row 0, file), in offset order
        self._next_base = 0
        ts = src.timestamp
        self._ts_field = ts.field if ts is not None else None
        self._ts = _timestamp_of(ts.field, ts.unit) if ts is not None else None
        self._stamps = _stamps_of(ts.field, ts.unit) if ts is not None else None
        self._now = int(time.time() * 1000)

    def chunks(self) -> Iterator[Chunk]:
        for piece in read_rows(self.src.file, self.base, self.chunk_rows):  # type: ignore[arg-type]
            if not self._files or self._files[-1][1] != piece.path:
                # a file's rows are offsets base + row index: `where` inverts it exactly
                self._files.append((self._next_base, piece.path))
            base = self._files[-1][0]
            first = piece.first_row
            chunk = Chunk(rows=len(piece.rows))
            for bad in piece.bad:  # not a record: no offset of its own, its line names it
                chunk.bad.append(BadInput(base + first, piece.path,
                                          f"{piece.path}:{bad.line}", bad.raw, bad.error))
            self._records(piece.rows, list(range(first, first + len(piece.rows))), base,
                          piece.path, chunk)
            self._next_base = max(self._next_base, base + first + len(piece.rows))
            yield chunk

    def _records(self, rows: list[dict[str, Any]], numbers: list[int], base: int, path: Path,
                 chunk: Chunk) -> None:
        """Whole-chunk comprehensions (no Python branch per row); a chunk with a row whose
        event time does not read goes row by row to find it."""
        kf, ts_of = self._key_field, self._ts
        try:
            stamps = self._stamps(rows) if self._stamps is not None else [self._now] * len(rows)
        except (KeyError, TypeError, ValueError):
            kept = []
            for row, number in zip(rows, numbers, strict=True):
                try:
                    ts_of(row)  # type: ignore[misc]
                    kept.append((row, number))
                except (KeyError, TypeError, ValueError) as exc:
                    chunk.bad.append(BadInput(
                        base + number, path, f"{path}, row {number + 1}", _raw(row),
                        f"timestamp field {self._ts_field!r} missing or not a valid time "
                        f"({type(exc).__name__}: {exc})"))
            rows, numbers = [r for r, _ in kept], [n for _, n in kept]
            stamps = [ts_of(r) for r in rows]  # type: ignore[misc]
        if kf is None:
            keys: list[Any] = [None] * len(rows)
        else:
            keys = list(map(methodcaller("get", kf), rows))
            if self._text_key:
                keys = [k if k is None or k.__class__ is str else str(k) for k in keys]
        offsets = (range(base + numbers[0], base + numbers[-1] + 1)
                   if numbers and numbers[-1] - numbers[0] + 1 == len(numbers)
                   else [base + n for n in numbers])
        records = list(zip(keys, rows, stamps, offsets, strict=True))
        if self.until is not None:
            until = self.until
            kept = [r for r in records if r[2] < until]
            self.after_until += len(records) - len(kept)
            records, keys = kept, [r[0] for r in kept]
        if self.partitions == 1:
            if records:
                chunk.records[0] = records
            return
        routes = self._routes
        if len(routes) > 1_000_000:
            routes.clear()  # bounded memory: refilled as keys come back
        for k in set(keys) - routes.keys():
            routes[k] = 0 if k is None else partition_for(self._key_encode(k), self.partitions)
        parts: list[Batch] = [[] for _ in range(self.partitions)]
        appends = [part.append for part in parts]
        for p, record in zip(map(routes.__getitem__, keys), records, strict=True):
            appends[p](record)
        chunk.records.update((p, part) for p, part in enumerate(parts) if part)

    def where(self, offset: int) -> str:
        """`file, row N` of the record at `offset` (N counts the file's rows from 1)."""
        i = bisect.bisect_right(self._files, offset, key=lambda f: f[0]) - 1
        if i < 0:
            return f"offset {offset}"
        base, path = self._files[i]
        return f"{path}, row {offset - base + 1}"


def _stamps_of(fieldname: str, unit: str) -> Callable[[list[dict[str, Any]]], list[int]]:
    """A chunk's event times at once: for epoch ms without a Python call per row."""
    if unit == "ms":
        get = itemgetter(fieldname)
        return lambda rows: list(map(int, map(get, rows)))
    one = _timestamp_of(fieldname, unit)
    return lambda rows: list(map(one, rows))


def _timestamp_of(fieldname: str, unit: str) -> Callable[[dict[str, Any]], int]:
    if unit == "ms":
        return lambda row: int(row[fieldname])
    if unit == "s":
        return lambda row: int(row[fieldname] * 1000)
    return lambda row: iso_to_ms(row[fieldname])


def _raw(row: dict[str, Any]) -> bytes:
    import orjson

    return orjson.dumps(row, default=str)
