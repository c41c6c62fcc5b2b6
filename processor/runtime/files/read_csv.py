"""CSV: a header line, then rows; pyarrow's streaming reader parses blocks, so memory stays
bounded whatever the file's size.

Types are inferred per column, so numbers are numbers: int, else float, else `true`/`false`
booleans, else text; an empty field is null (only an empty one: `NA` is text). Dates and
times stay text, as they would in a JSON line (so `unit: iso` timestamps work the same on
both). pyarrow infers the types from the first block only; when a later block holds a value
that does not fit (a `2.5` in a column of ints, an `n/a` in a column of numbers), the file is
opened again at the first row not yet yielded, with that column widened (null -> int ->
float -> text). Rows already yielded keep their values, as JSON lines' numbers would.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.types as pat

from processor.runtime.files.arrow_rows import ArrowRows
from processor.runtime.files.chunks import RowChunk
from processor.runtime.files.errors import FileInputError

_BLOCK = 4 << 20
_CONVERSION = re.compile(r"In CSV column #(\d+): .*CSV conversion error to \w+: invalid value '(.*)'",
                         re.DOTALL)


def read_csv(path: Path, chunk_rows: int, block_size: int = _BLOCK) -> Iterator[RowChunk]:
    """The rows of one CSV file in order, at most `chunk_rows` per chunk. An empty file (what a
    CSV sink writes for no rows) has no rows."""
    if _empty(path):
        return
    types: dict[str, pa.DataType] = {}
    row_no = 0
    while True:
        reader = _open(path, types, row_no, block_size)
        convert = ArrowRows(reader.schema)
        try:
            for batch in reader:
                for start in range(0, batch.num_rows, chunk_rows):
                    piece = batch.slice(start, chunk_rows)
                    yield RowChunk(path, row_no, convert.rows(piece), [])
                    row_no += piece.num_rows
            return
        except pa.ArrowInvalid as exc:
            if not (misfit := _CONVERSION.match(str(exc))):
                raise _unreadable(path, row_no, exc) from exc
            field = reader.schema.field(int(misfit[1]))
            types[field.name] = _wider(field.type, misfit[2], path, field.name, row_no)
        except (pa.ArrowException, OSError) as exc:
            raise _unreadable(path, row_no, exc) from exc


def _unreadable(path: Path, row_no: int, exc: Exception) -> FileInputError:
    where = f" in the block after row {row_no}" if row_no else ""
    return FileInputError(f"cannot read {str(path)!r} as CSV{where}: {exc}")


def _empty(path: Path) -> bool:
    try:
        return path.stat().st_size == 0
    except OSError as exc:
        raise FileInputError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from exc


def _open(path: Path, types: dict[str, pa.DataType], skip: int,
          block_size: int) -> pcsv.CSVStreamingReader:
    def attempt(column_types: dict[str, pa.DataType]) -> pcsv.CSVStreamingReader:
        try:
            return pcsv.open_csv(
                path, read_options=pcsv.ReadOptions(block_size=block_size,
                                                       skip_rows_after_names=skip),
                convert_options=pcsv.ConvertOptions(column_types=column_types, null_values=[""],
                                                    strings_can_be_null=True))
        except (pa.ArrowException, OSError) as exc:
            raise FileInputError(f"cannot read {str(path)!r} as CSV: {exc}") from exc

    reader = attempt(types)
    temporal = {f.name: pa.string() for f in reader.schema
                if f.name not in types and (pat.is_temporal(f.type))}
    return attempt({**types, **temporal}) if temporal else reader


def _wider(old: pa.DataType, value: str, path: Path, name: str, row_no: int) -> pa.DataType:
    """The next type up the ladder null -> int -> float -> text (null may also become bool)
    that holds `value`; each step goes strictly up, so widening ends."""
    if pat.is_string(old) or pat.is_large_string(old):
        raise FileInputError(f"cannot read {str(path)!r} as CSV: column {name!r} after row "
                             f"{row_no}: value {value!r} does not fit its type {old}")
    steps: list[tuple[pa.DataType, Callable[[str], bool]]] = []
    if pat.is_null(old):
        steps = [(pa.int64(), _is_int), (pa.float64(), _is_float), (pa.bool_(), _is_bool)]
    elif pat.is_integer(old):
        steps = [(pa.float64(), _is_float)]
    return next((t for t, fits in steps if fits(value)), pa.string())


def _is_int(v: str) -> bool:
    try:
        int(v)
    except ValueError:
        return False
    return True


def _is_float(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


def _is_bool(v: str) -> bool:
    return v.lower() in ("true", "false")
