"""What a file reader yields: rows in bounded chunks, with the lines that could not be read."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple


class BadRow(NamedTuple):
    """A line that is not a row: its 1-based line number in the file, its bytes (without the
    line break) and why it was refused."""

    line: int
    raw: bytes
    error: str


@dataclass(frozen=True, slots=True)
class RowChunk:
    """Consecutive rows of one file. `first_row` counts the file's rows before `rows[0]`
    (0-based, bad and blank lines not counted), so a chunk's rows are
    `first_row .. first_row + len(rows) - 1` of the file."""

    path: Path
    first_row: int
    rows: list[dict[str, Any]]
    bad: list[BadRow]
