"""What a sink writes, a source reads back: every format, the same rows."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from processor.runtime.files.read import read_rows
from processor.runtime.files.write import FileSinkWriter
from processor.spec.bounded import FileSinkSpec, FileSourceSpec

ROWS: list[dict[str, Any]] = [
    {"order_id": i, "user": f"u{i % 7}", "amount": i * 1.25, "paid": i % 2 == 0,
     "note": None if i % 3 else f"n, \"{i}\"\nline"}
    for i in range(2500)]


def _roundtrip(tmp_path: Path, name: str, rows: list[dict[str, Any]],
               batches: int = 3) -> list[dict[str, Any]]:
    writer = FileSinkWriter(FileSinkSpec(path=name), tmp_path)
    step = max(1, -(-len(rows) // batches))
    for start in range(0, len(rows), step):
        writer.write(rows[start:start + step])
    writer.commit()
    return [r for c in read_rows(FileSourceSpec(path=name), tmp_path, 1000) for r in c.rows]


@pytest.mark.parametrize("name", ["out.jsonl", "out.csv", "out.parquet"])
def test_every_format_reads_back_the_rows_it_wrote(tmp_path: Path, name: str) -> None:
    assert _roundtrip(tmp_path, name, ROWS) == ROWS


@pytest.mark.parametrize("name", ["out.jsonl", "out.csv", "out.parquet"])
def test_no_rows_is_a_file_that_reads_back_empty(tmp_path: Path, name: str) -> None:
    assert _roundtrip(tmp_path, name, []) == []
    assert (tmp_path / name).exists()


def test_jsonl_keeps_nested_values_and_writes_datetimes_as_iso_text(tmp_path: Path) -> None:
    at = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    rows = [{"k": 1, "v": {"a": [1, 2, {"b": None}]}, "at": at, "naive": at.replace(tzinfo=None)}]
    assert _roundtrip(tmp_path, "out.jsonl", rows) == [
        {"k": 1, "v": {"a": [1, 2, {"b": None}]}, "at": "2024-01-02T03:04:05+00:00",
         "naive": "2024-01-02T03:04:05+00:00"}]


def test_csv_writes_datetimes_as_iso_text_nested_values_as_json_and_missing_as_empty(
        tmp_path: Path) -> None:
    at = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    rows = [{"a": 1, "at": at, "v": {"x": [1]}}, {"a": 2}]
    assert _roundtrip(tmp_path, "out.csv", rows, batches=1) == [
        {"a": 1, "at": "2024-01-02T03:04:05+00:00", "v": '{"x":[1]}'},
        {"a": 2, "at": None, "v": None}]
    assert (tmp_path / "out.csv").read_text().splitlines()[0] == "a,at,v"


def test_parquet_datetimes_read_back_as_epoch_milliseconds(tmp_path: Path) -> None:
    at = datetime(2024, 1, 2, 3, 4, 5, 6000, tzinfo=UTC)
    assert _roundtrip(tmp_path, "out.parquet", [{"at": at}], batches=1) == [
        {"at": 1704164645006}]
