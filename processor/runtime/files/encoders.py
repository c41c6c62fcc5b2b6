"""Rows to bytes, one encoder per sink format, writing into an open binary file.

jsonl: one object per line (orjson; datetimes as ISO-8601 text, a naive one taken as UTC).
csv: the header is the first row's columns; a later row with another column is an error
naming it, a missing column is an empty field (read back as null); booleans are
`true`/`false`, datetimes ISO text, lists and mappings JSON text.
parquet: rows are buffered into row groups; the file's schema is the first group's (a column's
type inferred from its values). A later group is cast to it where that loses nothing (ints
into a float column, a column without values) and is an error naming the column otherwise.
"""

from __future__ import annotations

import csv
import io
from contextlib import suppress
from datetime import date, datetime, time
from functools import partial
from typing import Any, BinaryIO, Protocol

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.types as pat

from processor.runtime.files.errors import FileOutputError
from processor.spec.bounded import FileFormat

_JSON_OPTIONS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NAIVE_UTC | orjson.OPT_NON_STR_KEYS
_ROW_GROUP = 65536
_dumps_line = partial(orjson.dumps, option=_JSON_OPTIONS)


class RowEncoder(Protocol):
    def write(self, rows: list[dict[str, Any]]) -> None: ...

    def finish(self) -> None:
        """Write what is buffered and the format's trailer; the file stays open."""

    def discard(self) -> None:
        """Let go of the file without finishing it (the sink is aborted); never raises."""


def encoder_for(fmt: FileFormat, out: BinaryIO, name: str) -> RowEncoder:
    """`name` is the sink's path, for error messages."""
    if fmt == "jsonl":
        return JsonlEncoder(out, name)
    if fmt == "csv":
        return CsvEncoder(out, name)
    return ParquetEncoder(out, name)


class JsonlEncoder:
    """Each row goes to the (buffered) file as soon as it is encoded. Holding a chunk's
    encoded rows in a list first cost 2.5-3 us a row, measured, nearly all of it in the kernel
    (one page fault per row: the heap grows by a block per result and shrinks when the list
    is freed); writing each at once costs about 0.35 us."""

    def __init__(self, out: BinaryIO, name: str) -> None:
        self._out, self._name, self._rows = out, name, 0

    def write(self, rows: list[dict[str, Any]]) -> None:
        try:
            self._out.writelines(map(_dumps_line, rows))
        except orjson.JSONEncodeError:
            for n, row in enumerate(rows, self._rows + 1):
                try:
                    _dumps_line(row)
                except orjson.JSONEncodeError as exc:
                    raise FileOutputError(f"{self._name}: row {n} cannot be written as JSON: "
                                          f"{exc}") from exc
            raise
        self._rows += len(rows)

    def finish(self) -> None:
        pass

    def discard(self) -> None:
        pass


_NATIVE = frozenset((str, int, float, type(None)))


def _cell(value: Any) -> Any:
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, dict | list | tuple):
        return orjson.dumps(value, option=orjson.OPT_NAIVE_UTC | orjson.OPT_NON_STR_KEYS).decode()
    return value


class CsvEncoder:
    def __init__(self, out: BinaryIO, name: str) -> None:
        self._text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
        self._csv = csv.writer(self._text, lineterminator="\n")
        self._name, self._rows = name, 0
        self._header: list[str] | None = None
        self._columns: frozenset[str] = frozenset()

    def write(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        if self._header is None:
            self._header = list(rows[0])
            self._columns = frozenset(self._header)
            self._csv.writerow(self._header)
        header, columns = self._header, self._columns
        lines = []
        for n, row in enumerate(rows, self._rows + 1):
            if not row.keys() <= columns:
                extra = next(c for c in row if c not in columns)
                raise FileOutputError(
                    f"{self._name}: row {n} has the column {extra!r}, which is not among the "
                    f"file's columns {', '.join(header)} (the first row's)")
            lines.append([v if type(v) in _NATIVE else _cell(v) for v in map(row.get, header)])
        self._csv.writerows(lines)
        self._rows += len(rows)

    def finish(self) -> None:
        self._text.flush()
        self._text.detach()  # the sink closes the file itself

    def discard(self) -> None:
        with suppress(ValueError):  # already detached by finish
            self._text.detach()


class ParquetEncoder:
    def __init__(self, out: BinaryIO, name: str, row_group: int = _ROW_GROUP) -> None:
        self._out, self._name, self._row_group = out, name, row_group
        self._buffer: list[dict[str, Any]] = []
        self._rows = 0  # rows in row groups written
        self._writer: pq.ParquetWriter | None = None
        self._schema = pa.schema([])

    def write(self, rows: list[dict[str, Any]]) -> None:
        self._buffer.extend(rows)
        while len(self._buffer) >= self._row_group:
            group = self._buffer[:self._row_group]
            del self._buffer[:self._row_group]
            self._write_group(group)

    def finish(self) -> None:
        if self._buffer or self._writer is None:
            self._write_group(self._buffer)
            self._buffer = []
        assert self._writer is not None
        self._writer.close()

    def discard(self) -> None:
        # closed here, while the file is open: otherwise the writer's finalizer writes a footer
        # into the closed file and fails
        if self._writer is not None:
            with suppress(pa.ArrowException, OSError, ValueError):
                self._writer.close()

    def _write_group(self, rows: list[dict[str, Any]]) -> None:
        table = self._table(rows)
        if self._writer is None:
            self._schema = table.schema
            self._writer = pq.ParquetWriter(self._out, self._schema)
        else:
            table = self._fit(table, rows)
        self._writer.write_table(table)
        self._rows += len(rows)

    def _table(self, rows: list[dict[str, Any]]) -> pa.Table:
        names = list(dict.fromkeys(c for row in rows for c in row))
        arrays = []
        for name in names:
            try:
                arrays.append(pa.array([row.get(name) for row in rows]))
            except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
                raise FileOutputError(
                    f"{self._name}: column {name!r} in rows {self._rows + 1}..{self._rows + len(rows)}"
                    f" has values of types parquet cannot hold in one column: {exc}") from exc
        return pa.Table.from_arrays(arrays, names=names)

    def _fit(self, table: pa.Table, rows: list[dict[str, Any]]) -> pa.Table:
        schema = self._schema
        known = set(schema.names)
        for name in table.column_names:
            if name not in known:
                n = self._rows + 1 + next(i for i, row in enumerate(rows) if name in row)
                raise FileOutputError(
                    f"{self._name}: row {n} has the column {name!r}, which is not among the file's "
                    f"columns {', '.join(schema.names)} (those of its first {self._row_group} rows)")
        columns = []
        for field in schema:
            if field.name not in table.column_names:
                columns.append(pa.nulls(len(table), field.type))
                continue
            column = table.column(field.name)
            if column.type != field.type:
                column = self._cast(column, field, len(rows))
            columns.append(column)
        return pa.Table.from_arrays(columns, schema=schema)

    def _cast(self, column: pa.ChunkedArray, field: pa.Field, count: int) -> pa.ChunkedArray:
        if pat.is_null(column.type) or (pat.is_integer(column.type) and pat.is_floating(field.type)):
            try:
                return column.cast(field.type)  # safe: an int a float cannot hold exactly fails
            except pa.ArrowInvalid as exc:
                raise FileOutputError(
                    f"{self._name}: column {field.name!r} in rows {self._rows + 1}.."
                    f"{self._rows + count}: {exc}") from exc
        raise FileOutputError(
            f"{self._name}: column {field.name!r} in rows {self._rows + 1}..{self._rows + count} "
            f"holds {column.type} values, but the file's column is {field.type} (from its first "
            f"rows{'; they had no value there' if pat.is_null(field.type) else ''})")
