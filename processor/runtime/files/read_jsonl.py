"""JSON lines: one object per line, parsed with orjson, in large blocks.

A line that is not JSON, or not an object, is a bad row (reported with its line number, the
run decides what to do with it); blank lines are skipped. The common case, a chunk where every
line is an object, is parsed by one `map` over the lines; only a chunk that fails is parsed
again line by line to find its bad lines. (Parsing a chunk as one JSON array is not safe: a
value split over two lines, with a line holding two values, can still give one object per
line.)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from processor.runtime.files.chunks import BadRow, RowChunk
from processor.runtime.files.errors import FileInputError

_BLOCK = 8 << 20
_BOM = b"\xef\xbb\xbf"  # some editors start UTF-8 files with it


def read_jsonl(path: Path, chunk_rows: int, block_size: int = _BLOCK) -> Iterator[RowChunk]:
    """The rows of one JSON-lines file, at most `chunk_rows` lines per chunk."""
    line_no = 0  # lines of the file before `pending`
    row_no = 0
    pending: list[bytes] = []
    tail = b""
    try:
        with open(path, "rb") as f:
            block = f.read(block_size).removeprefix(_BOM)
            while block:
                lines = (tail + block).split(b"\n") if tail else block.split(b"\n")
                tail = lines.pop()
                pending.extend(lines)
                if len(pending) >= chunk_rows:
                    full = len(pending) - len(pending) % chunk_rows
                    for start in range(0, full, chunk_rows):
                        chunk = _parse(path, pending[start:start + chunk_rows], line_no, row_no)
                        line_no += chunk_rows
                        row_no += len(chunk.rows)
                        if chunk.rows or chunk.bad:
                            yield chunk
                    del pending[:full]
                block = f.read(block_size)
    except OSError as exc:
        raise FileInputError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from exc
    if tail:
        pending.append(tail)
    if pending:
        chunk = _parse(path, pending, line_no, row_no)
        if chunk.rows or chunk.bad:
            yield chunk


def _parse(path: Path, lines: list[bytes], line_no: int, row_no: int) -> RowChunk:
    try:
        rows: list[Any] = list(map(orjson.loads, lines))
    except orjson.JSONDecodeError:
        return _parse_each(path, lines, line_no, row_no)
    if all(type(r) is dict for r in rows):
        return RowChunk(path, row_no, rows, [])
    return _parse_each(path, lines, line_no, row_no)


def _parse_each(path: Path, lines: list[bytes], line_no: int, row_no: int) -> RowChunk:
    rows: list[dict[str, Any]] = []
    bad: list[BadRow] = []
    for n, line in enumerate(lines, line_no + 1):
        if not line.strip():
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            bad.append(BadRow(n, line, f"not JSON: {exc}"))
            continue
        if type(value) is dict:
            rows.append(value)
        else:
            bad.append(BadRow(n, line, f"not a JSON object but {_kind(value)}"))
    return RowChunk(path, row_no, rows, bad)


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"
