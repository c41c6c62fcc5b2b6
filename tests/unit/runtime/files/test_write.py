"""File sinks: atomic replacement, stale temp files, rows that do not fit, record -> row."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from processor.runtime.files.encoders import ParquetEncoder
from processor.runtime.files.errors import FileOutputError
from processor.runtime.files.write import FileSinkWriter, remove_stale_temps, sink_row
from processor.spec.bounded import FileSinkSpec
from tests.paths import REPO


def _write(tmp_path: Path, name: str, rows: list[dict[str, object]]) -> None:
    with FileSinkWriter(FileSinkSpec(path=name), tmp_path) as writer:
        writer.write(rows)
        writer.commit()


def test_a_rerun_replaces_the_target_instead_of_adding_to_it(tmp_path: Path) -> None:
    _write(tmp_path, "out.jsonl", [{"a": 1}, {"a": 2}])
    _write(tmp_path, "out.jsonl", [{"a": 1}, {"a": 2}])
    assert (tmp_path / "out.jsonl").read_bytes() == b'{"a":1}\n{"a":2}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


def test_abort_leaves_the_old_target_whole_and_no_temp_file(tmp_path: Path) -> None:
    _write(tmp_path, "out.csv", [{"a": 1}])
    writer = FileSinkWriter(FileSinkSpec(path="out.csv"), tmp_path)
    writer.write([{"a": 2}] * 1000)
    assert writer.temp.exists() and writer.temp.name == f".out.csv.{os.getpid()}.tmp"
    writer.abort()
    writer.abort()
    assert (tmp_path / "out.csv").read_text() == "a\n1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


def test_an_exception_inside_the_with_block_aborts(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), FileSinkWriter(FileSinkSpec(path="o.jsonl"), tmp_path) as w:
        w.write([{"a": 1}])
        raise RuntimeError("the run failed")
    assert list(tmp_path.iterdir()) == []


def test_a_killed_writer_leaves_no_target_and_its_temp_is_removed_by_the_next(
        tmp_path: Path) -> None:
    crash = (
        "import os, sys\nfrom pathlib import Path\n"
        "from processor.runtime.files.write import FileSinkWriter\n"
        "from processor.spec.bounded import FileSinkSpec\n"
        "w = FileSinkWriter(FileSinkSpec(path='out.parquet'), Path(sys.argv[1]))\n"
        "w.write([{'a': i} for i in range(100000)])\n"
        "print(os.getpid(), flush=True)\n"
        "os._exit(9)\n")
    done = subprocess.run([sys.executable, "-c", crash, str(tmp_path)], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
    assert done.returncode == 9, done.stderr
    stale = tmp_path / f".out.parquet.{done.stdout.strip()}.tmp"
    assert [p.name for p in tmp_path.iterdir()] == [stale.name]  # no target
    _write(tmp_path, "out.parquet", [{"a": 1}])
    assert [p.name for p in tmp_path.iterdir()] == ["out.parquet"]
    assert pq.read_table(tmp_path / "out.parquet").to_pylist() == [{"a": 1}]


def test_a_temp_file_of_a_running_process_is_kept(tmp_path: Path) -> None:
    live = tmp_path / ".out.jsonl.1.tmp"  # pid 1 always runs
    other = tmp_path / ".other.jsonl.99999999.tmp"
    live.write_text("")
    other.write_text("")
    assert remove_stale_temps(tmp_path / "out.jsonl") == []
    assert live.exists() and other.exists()


def test_two_writers_of_one_target_in_one_process_are_refused(tmp_path: Path) -> None:
    with (FileSinkWriter(FileSinkSpec(path="o.jsonl"), tmp_path),
          pytest.raises(FileOutputError, match=r"this process already writes .*o.jsonl")):
        FileSinkWriter(FileSinkSpec(path="o.jsonl"), tmp_path)


def test_the_target_directory_is_created_and_a_directory_target_refused(tmp_path: Path) -> None:
    _write(tmp_path, "deep/er/out.jsonl", [{"a": 1}])
    assert (tmp_path / "deep" / "er" / "out.jsonl").read_bytes() == b'{"a":1}\n'
    with pytest.raises(FileOutputError, match=r"sink 'deep': '.*deep' is a directory"):
        FileSinkWriter(FileSinkSpec(path="deep", format="csv"), tmp_path)


def test_writing_after_commit_is_an_error_and_abort_keeps_the_commit(tmp_path: Path) -> None:
    writer = FileSinkWriter(FileSinkSpec(path="o.jsonl"), tmp_path)
    writer.commit()
    with pytest.raises(FileOutputError, match="written to after commit"):
        writer.write([{"a": 1}])
    writer.abort()  # after a commit: nothing to undo
    assert (tmp_path / "o.jsonl").exists()


def test_a_csv_row_with_an_unknown_column_names_it_and_the_row(tmp_path: Path) -> None:
    with FileSinkWriter(FileSinkSpec(path="o.csv"), tmp_path) as writer:
        writer.write([{"a": 1, "b": 2}, {"a": 3}])
        with pytest.raises(FileOutputError, match=r"o.csv: row 4 has the column 'c', which is "
                                                  r"not among the file's columns a, b"):
            writer.write([{"b": 1}, {"a": 1, "c": 2}])


def test_a_row_json_cannot_hold_is_named_and_the_writer_can_then_only_abort(
        tmp_path: Path) -> None:
    (tmp_path / "o.jsonl").write_bytes(b'{"old":1}\n')
    writer = FileSinkWriter(FileSinkSpec(path="o.jsonl"), tmp_path)
    writer.write([{"a": 0}])
    with pytest.raises(FileOutputError, match=r"o.jsonl: row 3 cannot be written as JSON"):
        writer.write([{"a": 1}, {"a": {1, 2}}])
    with pytest.raises(FileOutputError, match="committed after a failed write"):
        writer.commit()
    with pytest.raises(FileOutputError, match="written to after a failed write"):
        writer.write([{"a": 2}])
    writer.abort()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.jsonl"]
    assert (tmp_path / "o.jsonl").read_bytes() == b'{"old":1}\n'


def test_parquet_row_groups_widen_ints_and_fill_missing_columns(tmp_path: Path) -> None:
    with open(tmp_path / "o.parquet", "wb") as out:
        enc = ParquetEncoder(out, "o.parquet", row_group=2)
        enc.write([{"a": 1.5, "b": "x"}, {"a": 2.0, "b": None}])
        enc.write([{"a": 3}, {"a": 4, "b": "y"}, {"b": None, "a": None}])
        enc.finish()
    f = pq.ParquetFile(tmp_path / "o.parquet")
    assert f.num_row_groups == 3
    assert f.read().to_pylist() == [
        {"a": 1.5, "b": "x"}, {"a": 2.0, "b": None}, {"a": 3.0, "b": None},
        {"a": 4.0, "b": "y"}, {"a": None, "b": None}]


def test_parquet_misfits_name_the_column(tmp_path: Path) -> None:
    files = ExitStack()

    def encoder() -> ParquetEncoder:
        out = files.enter_context((tmp_path / "o.parquet").open("wb"))
        enc = ParquetEncoder(out, "o.parquet", row_group=2)
        files.callback(enc.discard)
        return enc

    enc = encoder()
    enc.write([{"a": 1, "b": None}, {"a": 2, "b": None}])
    with pytest.raises(FileOutputError, match=r"column 'a' in rows 3..4 holds string values, but "
                                              r"the file's column is int64"):
        enc.write([{"a": "x"}, {"a": "y"}])
    enc = encoder()
    enc.write([{"a": 1, "b": None}, {"a": 2, "b": None}])
    with pytest.raises(FileOutputError, match=r"column 'b' .* the file's column is null \(from its "
                                              r"first rows; they had no value there\)"):
        enc.write([{"a": 3, "b": 1}, {"a": 4}])
    enc = encoder()
    enc.write([{"a": 1}, {"a": 2}])
    with pytest.raises(FileOutputError, match=r"row 4 has the column 'z', which is not among the "
                                              r"file's columns a"):
        enc.write([{"a": 3}, {"z": 4}])
    enc = encoder()
    with pytest.raises(FileOutputError, match=r"column 'a' in rows 1..2 has values of types "
                                              r"parquet cannot hold in one column"):
        enc.write([{"a": 1}, {"a": "x"}])
    enc = encoder()
    with pytest.raises(FileOutputError, match=r"column 'a' in rows 1..2 has values"):
        enc.write([{"a": 1}, {"a": 2**64}])
    enc = encoder()
    enc.write([{"a": 1.5}, {"a": 2.5}])
    with pytest.raises(FileOutputError, match=r"column 'a' in rows 3..4: .*2\^53|column 'a' in rows 3..4"):
        enc.write([{"a": 2**60 + 1}, {"a": 3}])
    files.close()


def test_sink_row_takes_a_mapping_value_or_wraps_another_and_adds_the_key() -> None:
    plain = FileSinkSpec(path="o.jsonl")
    keyed = FileSinkSpec(path="o.jsonl", key="user")
    value = {"n": 1}
    assert sink_row(plain, "u1", value) is value
    assert sink_row(plain, "u1", 5) == {"value": 5}
    assert sink_row(keyed, "u1", value) == {"n": 1, "user": "u1"}
    assert value == {"n": 1}  # the record's value is not changed
    assert sink_row(keyed, "u1", [1]) == {"value": [1], "user": "u1"}


def test_a_commit_that_fails_removes_the_temp_and_keeps_the_old_target(tmp_path: Path) -> None:
    _write(tmp_path, "o.parquet", [{"a": 0}])
    writer = FileSinkWriter(FileSinkSpec(path="o.parquet"), tmp_path)
    writer.write([{"a": 1}] * 65536)  # one full row group: the file's column a is int64
    writer.write([{"a": "late text"}])  # buffered, written by the commit
    with pytest.raises(FileOutputError, match=r"column 'a' in rows 65537..65537 holds string"):
        writer.commit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.parquet"]
    assert pq.read_table(tmp_path / "o.parquet").to_pylist() == [{"a": 0}]
