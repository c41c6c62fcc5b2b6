"""Test files (`foo.test.yaml` beside `foo.yaml`): loaded, validated, pointed at by line.

Errors are reported as `file:line: field: message`, with the topology loader's line mapping
(spec/loader.py): the YAML node tree is walked beside the data and pydantic's error locations
are turned back into lines.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from processor.errors import SpecError, SpecErrors
from processor.spec.base import Strict
from processor.spec.loader import LineMap, PathT, format_path, parse_mapped
from processor.timeutil import parse_duration_ms
from processor.timeutil.timestamps import iso_to_ms


class InputRecord(Strict):
    key: Any = None
    value: Any = None
    timestamp: int = 0
    partition: int | None = Field(default=None, ge=0)
    headers: dict[str, str | int] = {}


class WatermarkAt(Strict):
    """Where a watermark step moves a source's event time: `to` (epoch ms, or ISO-8601
    text; without an offset UTC), on every partition or on `partition`."""

    to: int | str
    partition: int | None = Field(default=None, ge=0)

    @field_validator("to")
    @classmethod
    def _time(cls, v: int | str) -> int | str:
        if isinstance(v, str):
            try:
                iso_to_ms(v)
            except ValueError:
                raise ValueError(f"{v!r} is neither epoch milliseconds nor ISO-8601 time "
                                 "(e.g. 2024-01-01T00:00:10Z)") from None
        return v

    @property
    def ms(self) -> int:
        return self.to if isinstance(self.to, int) else iso_to_ms(self.to)


class Step(Strict):
    """One of: `input: {source: [records]}`, `watermark: {source: TIME}` (event time; `TIME`
    or `{to: TIME, partition: N}`), `advance: 30s` (processing time; a duration or
    milliseconds), `checkpoint`, `crash` (the last two written as bare words)."""

    input: dict[str, list[InputRecord]] | None = None
    watermark: dict[str, WatermarkAt] | None = None
    advance: int | str | None = None
    checkpoint: bool = False
    crash: bool = False

    @model_validator(mode="before")
    @classmethod
    def _word(cls, v: Any) -> Any:
        if v in ("checkpoint", "crash"):
            return {v: True}
        if isinstance(v, str) or not isinstance(v, dict):
            raise ValueError("a step is `input: {source: [records]}`, `watermark: {source: TIME}`, "
                             f"`advance: DURATION`, `checkpoint` or `crash`; got {v!r:.60}")
        marks = v.get("watermark")
        if isinstance(marks, dict):  # `source: TIME` is short for `source: {to: TIME}`
            v = {**v, "watermark": {src: at if isinstance(at, dict) else {"to": at}
                                    for src, at in marks.items()}}
        return v

    @model_validator(mode="after")
    def _one(self) -> Step:
        if sum((self.input is not None, self.watermark is not None, self.advance is not None,
                self.checkpoint, self.crash)) != 1:
            raise ValueError("a step does exactly one thing: input, watermark, advance, "
                             "checkpoint or crash")
        if isinstance(self.advance, str):
            parse_duration_ms(self.advance)
        return self

    @property
    def advance_ms(self) -> int:
        return parse_duration_ms(self.advance or 0)


class Expected(Strict):
    records: list[dict[str, Any]]
    match: Literal["exact", "subset"] = "exact"
    ordered: bool = True
    # fields left out of the comparison on both sides, e.g. `value.score` (a model's output)
    ignore: list[str] = []

    @field_validator("ignore")
    @classmethod
    def _paths(cls, v: list[str]) -> list[str]:
        for path in v:
            if path.split(".")[0] not in ("key", "value", "timestamp", "partition", "headers"):
                raise ValueError(f"{path!r}: a path starts with key, value, timestamp, "
                                 "partition or headers (e.g. value.score)")
        return v

    @field_validator("records")
    @classmethod
    def _fields(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for r in v:
            unknown = set(r) - {"key", "value", "timestamp", "partition", "headers"}
            if unknown:
                raise ValueError(f"unknown record field(s) {', '.join(sorted(unknown))}; "
                                 "a record has key, value, timestamp, partition, headers")
        return v


class Case(Strict):
    name: str
    checkpoints: Literal["auto", "manual"] = "auto"
    steps: list[Step]
    expect: dict[str, list[dict[str, Any]] | Expected] = {}

    def expectations(self) -> dict[str, Expected]:
        return {topic: e if isinstance(e, Expected) else Expected(records=e)
                for topic, e in self.expect.items()}


class TestFile(Strict):
    partitions: dict[str, int] = {}
    tests: list[Case]


class LoadedTests:
    def __init__(self, path: Path, tests: TestFile, data: Any, lines: LineMap) -> None:
        self.path, self.tests, self.data, self.lines = path, tests, data, lines

    def error(self, path: PathT, message: str) -> SpecError:
        return SpecError(message, file=str(self.path), line=self.lines.line_of(path),
                         path=format_path(path))


def load_tests(path: Path) -> LoadedTests:
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        hint = (" (write one: see README, Developing a topology)"
                if isinstance(exc, FileNotFoundError) else "")
        raise SpecErrors([SpecError(f"cannot read test file: {exc.strerror}{hint}",
                                    file=file)]) from None
    tests, data, line_map, errors = parse_mapped(
        text, file, TestFile, "a test file must be a YAML mapping with `tests:`")
    if errors:
        raise SpecErrors(errors)
    return LoadedTests(path, tests, data, line_map)


def default_tests(topology: Path) -> Path:
    """`foo.yaml` -> `foo.test.yaml` beside it."""
    return topology.with_name(topology.name.removesuffix(".yaml").removesuffix(".yml") + ".test.yaml")


def without(record: dict[str, Any], paths: list[str]) -> dict[str, Any]:
    """A copy of `record` without the fields at the dotted `paths` (an expectation's
    `ignore`)."""
    if not paths:
        return record
    out = copy.deepcopy(record)
    for path in paths:
        *parents, last = path.split(".")
        node: Any = out
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return out
