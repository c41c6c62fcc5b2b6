"""CSV and parquet through pyarrow: typed values, JSON-like temporal values, bounded chunks."""

from __future__ import annotations

import decimal
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from processor.runtime.files.errors import FileInputError
from processor.runtime.files.read import read_rows
from processor.runtime.files.read_csv import read_csv
from processor.spec.bounded import FileSourceSpec


def _read(tmp_path: Path, path: str, chunk_rows: int = 65536) -> list[dict[str, object]]:
    return [r for c in read_rows(FileSourceSpec(path=path), tmp_path, chunk_rows) for r in c.rows]


def test_csv_columns_are_typed_and_dates_stay_text(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text(
        "id,amount,paid,user,day,at,note\n"
        "1,2.5,true,u1,2024-01-02,2024-01-02T03:04:05Z,\n"
        '2,3,false,"u, 2",2024-01-03,2024-01-03T00:00:00Z,hi\n')
    assert _read(tmp_path, "in.csv") == [
        {"id": 1, "amount": 2.5, "paid": True, "user": "u1", "day": "2024-01-02",
         "at": "2024-01-02T03:04:05Z", "note": None},
        {"id": 2, "amount": 3.0, "paid": False, "user": "u, 2", "day": "2024-01-03",
         "at": "2024-01-03T00:00:00Z", "note": "hi"}]


def test_csv_widens_a_column_when_a_later_block_does_not_fit(tmp_path: Path) -> None:
    lines = [f"{i},{i},,{i % 2 == 0}" for i in range(3000)]
    lines += ["2.5,n/a,7,maybe", "4,5,,true"]
    (tmp_path / "in.csv").write_text("a,b,c,d\n" + "\n".join(lines) + "\n")
    chunks = list(read_csv(tmp_path / "in.csv", 1000, block_size=4096))
    rows = [r for c in chunks for r in c.rows]
    assert [c.first_row for c in chunks] == [
        sum(len(c.rows) for c in chunks[:i]) for i in range(len(chunks))]
    assert all(len(c.rows) <= 1000 for c in chunks)
    assert len(rows) == 3002
    assert rows[0] == {"a": 0, "b": 0, "c": None, "d": True}
    # the blocks read before the misfit's block keep their types, as JSON numbers would
    widened = next(i for i, r in enumerate(rows) if isinstance(r["a"], float))
    assert 0 < widened < 3000
    assert all(type(r["a"]) is int and type(r["d"]) is bool for r in rows[:widened])
    assert rows[3000] == {"a": 2.5, "b": "n/a", "c": 7, "d": "maybe"}
    assert rows[3001] == {"a": 4.0, "b": "5", "c": None, "d": "true"}


def test_an_unreadable_csv_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n3,4,5\n")
    with pytest.raises(FileInputError, match=r"cannot read '.*bad.csv' as CSV.*Expected 2 columns, got 3"):
        _read(tmp_path, "bad.csv")
    (tmp_path / "late.csv").write_text("a,b\n" + "1,2\n" * 100 + "3,4,5\n")
    with pytest.raises(FileInputError, match=r"cannot read '.*late.csv' as CSV in the block after "
                                             r"row \d+: .*Expected 2 columns, got 3: 3,4,5"):
        list(read_csv(tmp_path / "late.csv", 10, block_size=64))


def test_an_empty_csv_and_a_header_alone_have_no_rows(tmp_path: Path) -> None:
    (tmp_path / "e.csv").write_text("")
    (tmp_path / "h.csv").write_text("a,b\n")
    assert _read(tmp_path, "e.csv") == []
    assert _read(tmp_path, "h.csv") == []


def test_parquet_timestamps_become_epoch_milliseconds(tmp_path: Path) -> None:
    at = datetime(2024, 1, 2, 3, 4, 5, 678901)
    table = pa.table({
        "ts_us": pa.array([at], pa.timestamp("us")),
        "ts_ns": pa.array([at], pa.timestamp("ns")),
        "ts_s": pa.array([at.replace(microsecond=0)], pa.timestamp("s")),
        "ts_tz": pa.array([at.replace(tzinfo=UTC)], pa.timestamp("ms", "UTC")),
        "day": pa.array([date(2024, 1, 2)]),
        "price": pa.array([decimal.Decimal("12.50")], pa.decimal128(6, 2)),
        "wait": pa.array([timedelta(seconds=1.5)]),
        "nested": pa.array([{"at": at, "tags": [at]}]),
    })
    pq.write_table(table, tmp_path / "t.parquet")
    ms = 1704164645678
    assert _read(tmp_path, "t.parquet") == [{
        "ts_us": ms, "ts_ns": ms, "ts_s": ms - 678, "ts_tz": ms, "day": "2024-01-02",
        "price": 12.5, "wait": 1500, "nested": {"at": ms, "tags": [ms]}}]


def test_parquet_chunks_cross_row_groups_in_order(tmp_path: Path) -> None:
    rows = [{"n": i, "s": None if i % 5 == 0 else f"v{i}"} for i in range(1000)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "t.parquet", row_group_size=300)
    for chunk_rows in (1, 64, 300, 999, 5000):
        chunks = list(read_rows(FileSourceSpec(path="t.parquet"), tmp_path, chunk_rows))
        assert [r for c in chunks for r in c.rows] == rows
        assert all(0 < len(c.rows) <= chunk_rows for c in chunks)
        assert [c.first_row for c in chunks] == [
            sum(len(c.rows) for c in chunks[:i]) for i in range(len(chunks))]


def test_an_unreadable_parquet_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(FileInputError, match=r"cannot read '.*bad.parquet' as parquet"):
        _read(tmp_path, "bad.parquet")
