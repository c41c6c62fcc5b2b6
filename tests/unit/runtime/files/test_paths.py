"""Which files an input path names, and in which order."""

from __future__ import annotations

from pathlib import Path

import pytest

from processor.runtime.files.errors import FileInputError
from processor.runtime.files.paths import expand


def _touch(*paths: Path) -> None:
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("")


def test_a_file_relative_to_the_base(tmp_path: Path) -> None:
    _touch(tmp_path / "data" / "a.jsonl")
    assert expand("data/a.jsonl", tmp_path, "jsonl") == [tmp_path / "data" / "a.jsonl"]


def test_an_absolute_file_ignores_the_base(tmp_path: Path) -> None:
    _touch(tmp_path / "a.csv")
    assert expand(str(tmp_path / "a.csv"), Path("/nowhere"), "csv") == [tmp_path / "a.csv"]


def test_a_directory_gives_its_direct_files_of_the_format_sorted(tmp_path: Path) -> None:
    d = tmp_path / "in"
    _touch(d / "b.parquet", d / "a.pq", d / "c.parquet", d / "notes.txt", d / "x.jsonl",
           d / ".hidden.parquet", d / "sub" / "deeper.parquet")
    assert expand("in", tmp_path, "parquet") == [d / "a.pq", d / "b.parquet", d / "c.parquet"]


def test_a_glob_gives_its_matches_sorted_and_double_star_goes_deep(tmp_path: Path) -> None:
    _touch(tmp_path / "2024-02.jsonl", tmp_path / "2024-01.jsonl", tmp_path / "2023-12.jsonl",
           tmp_path / "y" / "2024-03.jsonl")
    assert expand("2024-*.jsonl", tmp_path, "jsonl") == [
        tmp_path / "2024-01.jsonl", tmp_path / "2024-02.jsonl"]
    assert expand("**/2024-*.jsonl", tmp_path, "jsonl") == [
        tmp_path / "2024-01.jsonl", tmp_path / "2024-02.jsonl", tmp_path / "y" / "2024-03.jsonl"]


def test_nothing_found_names_the_path_and_what_was_looked_for(tmp_path: Path) -> None:
    with pytest.raises(FileInputError,
                       match=r"input 'missing.csv': no such file or directory '.*missing.csv'"):
        expand("missing.csv", tmp_path, "csv")
    with pytest.raises(FileInputError, match=r"input '\*.csv': no file matches the pattern '.*/\*.csv'"):
        expand("*.csv", tmp_path, "csv")
    _touch(tmp_path / "empty" / "a.csv")
    with pytest.raises(FileInputError, match=r"the directory '.*empty' has no parquet file "
                                             r"\(looked for names ending in .parquet, .pq\)"):
        expand("empty", tmp_path, "parquet")


def test_pattern_characters_in_the_base_directory_are_literal(tmp_path: Path) -> None:
    base = tmp_path / "run[1]"
    _touch(base / "a.csv", tmp_path / "run1" / "b.csv")
    assert expand("*.csv", base, "csv") == [base / "a.csv"]
