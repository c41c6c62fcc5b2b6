"""JSON lines: rows in order and in chunks, bad lines reported with their line numbers."""

from __future__ import annotations

from pathlib import Path

import orjson

from processor.runtime.files.chunks import RowChunk
from processor.runtime.files.read import read_rows
from processor.runtime.files.read_jsonl import read_jsonl
from processor.spec.bounded import FileSourceSpec


def _rows(chunks: list[RowChunk]) -> list[dict[str, object]]:
    return [row for c in chunks for row in c.rows]


def test_bad_lines_come_with_their_line_numbers_and_blank_lines_are_skipped(tmp_path: Path) -> None:
    f = tmp_path / "in.jsonl"
    f.write_bytes(b'{"a": 1}\n\n[1, 2]\nnot json\n   \n{"a": 2}\r\n"text"\n{"a": 3}')
    chunks = list(read_rows(FileSourceSpec(path="in.jsonl"), tmp_path))
    assert _rows(chunks) == [{"a": 1}, {"a": 2}, {"a": 3}]
    bad = [b for c in chunks for b in c.bad]
    assert [(b.line, b.raw) for b in bad] == [(3, b"[1, 2]"), (4, b"not json"), (7, b'"text"')]
    assert bad[0].error == "not a JSON object but an array"
    assert bad[1].error.startswith("not JSON: ")
    assert bad[2].error == "not a JSON object but a string"


def test_two_values_on_a_line_are_bad_even_when_lines_join_into_objects(tmp_path: Path) -> None:
    # joined as one array these lines would give three objects for three lines
    f = tmp_path / "in.jsonl"
    f.write_bytes(b'{"a": [1\n2]}\n{"x": 1}, {"y": 2}\n')
    chunk, = read_jsonl(f, 100)
    assert chunk.rows == []
    assert [b.line for b in chunk.bad] == [1, 2, 3]


def test_chunks_are_bounded_consecutive_and_count_rows_not_lines(tmp_path: Path) -> None:
    rows = [{"n": i, "s": "x" * (i % 7)} for i in range(1000)]
    lines = [orjson.dumps(r) for r in rows]
    lines.insert(500, b"oops")
    (tmp_path / "in.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    for chunk_rows in (1, 7, 64, 1001, 5000):
        for block in (5, 64, 1 << 20):  # lines straddle the read blocks
            chunks = list(read_jsonl(tmp_path / "in.jsonl", chunk_rows, block))
            assert _rows(chunks) == rows
            assert all(0 < len(c.rows) + len(c.bad) <= chunk_rows for c in chunks)
            assert [c.first_row for c in chunks] == [
                sum(len(c.rows) for c in chunks[:i]) for i in range(len(chunks))]
            bad, = [b for c in chunks for b in c.bad]
            assert (bad.line, bad.raw) == (501, b"oops")
            assert bad.error.startswith("not JSON: unexpected character")


def test_files_are_read_in_path_order(tmp_path: Path) -> None:
    for name, n in (("b.jsonl", 2), ("a.jsonl", 1), ("c.jsonl", 3)):
        (tmp_path / "d").mkdir(exist_ok=True)
        (tmp_path / "d" / name).write_bytes(orjson.dumps({"n": n}))
    chunks = list(read_rows(FileSourceSpec(path="d", format="jsonl"), tmp_path))
    assert [(c.path.name, c.first_row, c.rows) for c in chunks] == [
        ("a.jsonl", 0, [{"n": 1}]), ("b.jsonl", 0, [{"n": 2}]), ("c.jsonl", 0, [{"n": 3}])]


def test_a_byte_order_mark_is_not_part_of_the_first_line(tmp_path: Path) -> None:
    (tmp_path / "bom.jsonl").write_bytes(b'\xef\xbb\xbf{"a": 1}\n{"a": 2}\n')
    assert _rows(list(read_rows(FileSourceSpec(path="bom.jsonl"), tmp_path))) == [{"a": 1}, {"a": 2}]


def test_an_empty_file_has_no_rows(tmp_path: Path) -> None:
    (tmp_path / "e.jsonl").write_bytes(b"")
    (tmp_path / "b.jsonl").write_bytes(b"\n\n  \n")
    assert list(read_rows(FileSourceSpec(path="*.jsonl"), tmp_path)) == []
