"""Bounded inputs: file sources and sinks, topic ranges, and backfill-then-live.

A topology runs over history the same way it runs live: a source may read files (`file:`),
a range of its topic (`bounded:`), or history first and then its live topic from an exact
switch point (`backfill:`). These models only say *what* is read; `processor batch`
(processor/batch/) and the worker do the reading.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Literal

from pydantic import Field, field_validator, model_validator

from processor.spec.base import Strict
from processor.timeutil.timestamps import iso_to_ms

FileFormat = Literal["jsonl", "csv", "parquet"]
_EXTENSIONS: dict[str, FileFormat] = {
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv",
    ".parquet": "parquet", ".pq": "parquet"}


def format_of(path: str) -> FileFormat | None:
    """The format a file name implies (`orders.parquet` -> parquet), if any."""
    name = PurePath(path.rstrip("/")).name.lower()
    return next((fmt for ext, fmt in _EXTENSIONS.items() if name.endswith(ext)), None)


def extensions_of(fmt: FileFormat) -> list[str]:
    """The file name endings that imply `fmt` (what a directory input is searched for)."""
    return [ext for ext, f in _EXTENSIONS.items() if f == fmt]


class _FileSpec(Strict):
    path: str
    format: FileFormat | None = None

    @model_validator(mode="after")
    def _format_known(self) -> _FileSpec:
        if self.format is None and format_of(self.path) is None:
            raise ValueError(f"cannot tell the format of {self.path!r} from its name: "
                             "add `format: jsonl | csv | parquet`")
        return self

    @property
    def file_format(self) -> FileFormat:
        fmt = self.format or format_of(self.path)
        assert fmt is not None  # _format_known
        return fmt


class FileSourceSpec(_FileSpec):
    """Rows of files (`path`: a file, a directory or a glob, read in sorted path order, each
    file top to bottom). A row is the record's value; `key` names the field that is its key
    (absent: no key). A relative path is relative to the topology file."""

    key: str | None = None


class FileSinkSpec(_FileSpec):
    """A file written by `processor batch`, atomically: the rows appear at `path` only when the
    run succeeds, whole, and a rerun replaces them. A row is the record's value (a value that
    is not a mapping is the row `{value: ...}`); `key` adds the record's key as that column."""

    key: str | None = None


class Bound(Strict):
    """A point in a topic: the first offset whose record's timestamp is at or after
    `timestamp` (epoch ms or ISO-8601), or explicit `offsets` per partition."""

    timestamp: int | None = None
    offsets: dict[int, int] | None = None

    @field_validator("timestamp", mode="before")
    @classmethod
    def _iso(cls, v: object) -> object:
        if isinstance(v, str) and not v.lstrip("-").isdigit():
            try:
                return iso_to_ms(v)
            except ValueError as exc:
                raise ValueError(f"not an ISO-8601 time or epoch milliseconds: {v!r}") from exc
        return v

    @model_validator(mode="after")
    def _one(self) -> Bound:
        if (self.timestamp is None) == (self.offsets is None):
            raise ValueError("give exactly one of `timestamp` or `offsets`")
        if self.offsets is not None and any(o < 0 or p < 0 for p, o in self.offsets.items()):
            raise ValueError("offsets and partitions are >= 0")
        return self


BoundPoint = Literal["earliest", "latest"] | Bound


class BoundedSpec(Strict):
    """A topic range: from `start` (default earliest) up to, not including, `end` (default:
    the end of each partition when the run starts). The run ends when every partition
    reached its end; then the watermark goes to +infinity, so every window and timer fires."""

    start: BoundPoint = "earliest"
    end: BoundPoint = "latest"

    @field_validator("start")
    @classmethod
    def _start(cls, v: BoundPoint) -> BoundPoint:
        if v == "latest":
            raise ValueError("a range cannot start at `latest` (it would be empty)")
        return v

    @field_validator("end")
    @classmethod
    def _end(cls, v: BoundPoint) -> BoundPoint:
        if v == "earliest":
            raise ValueError("a range cannot end at `earliest` (it would be empty)")
        return v


class BackfillSpec(Strict):
    """History first, then the live topic from exactly the switch point.

    `file`: the history is in files; rows with event time before `switch.timestamp` are
    history, and the live topic is read from each partition's first record at or after it.
    Without `file` the history is the source's own topic, read as a batch up to `switch`
    (a timestamp or per-partition offsets), then live from there."""

    file: FileSourceSpec | None = None
    switch: Bound = Field(description="where history ends and the live topic takes over")

    @model_validator(mode="after")
    def _switch_fits(self) -> BackfillSpec:
        if self.file is not None and self.switch.offsets is not None:
            raise ValueError("history in files switches at a `timestamp` (offsets do not "
                             "exist in files)")
        return self
