"""Reading a file source: its files in sorted path order, each top to bottom, in chunks of at
most `chunk_rows` rows, so memory is bounded by the chunk whatever the files' sizes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from processor.runtime.files.chunks import RowChunk
from processor.runtime.files.paths import expand
from processor.runtime.files.read_csv import read_csv
from processor.runtime.files.read_jsonl import read_jsonl
from processor.runtime.files.read_parquet import read_parquet
from processor.spec.bounded import FileFormat, FileSourceSpec

_READERS: dict[FileFormat, Callable[[Path, int], Iterator[RowChunk]]] = {
    "jsonl": read_jsonl, "csv": read_csv, "parquet": read_parquet}


def read_rows(spec: FileSourceSpec, base: Path, chunk_rows: int = 65536) -> Iterator[RowChunk]:
    """Every row of every file `spec.path` names (see `paths.expand`); a relative path is
    relative to `base`. Raises FileInputError when no file matches or a file is unreadable."""
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, not {chunk_rows}")
    fmt = spec.file_format
    paths = expand(spec.path, base, fmt)  # now, so a wrong path fails before any row is read
    return (chunk for path in paths for chunk in read_file(path, fmt, chunk_rows))


def read_file(path: Path, fmt: FileFormat, chunk_rows: int = 65536) -> Iterator[RowChunk]:
    """The rows of one file (a piece the engine may read on its own)."""
    return _READERS[fmt](path, chunk_rows)
