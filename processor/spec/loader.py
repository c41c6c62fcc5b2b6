"""Load topology YAML into a TopologySpec, reporting errors as `file:line: field.path: message`.

PyYAML's composed node tree is walked alongside the data to remember the line of every
mapping key and sequence item, so pydantic's error locations can be turned back into lines.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from processor.errors import SpecError, SpecErrors
from processor.spec.base import REF_PATTERN
from processor.spec.checks import check_spec
from processor.spec.models import TopologySpec
from processor.spec.steps import STEP_KINDS

PathT = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)


@dataclass
class LineMap:
    """Maps a data path (keys and indexes) to the 1-based line where it is written."""

    lines: dict[PathT, int] = field(default_factory=dict)

    def line_of(self, path: PathT) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get(())


def format_path(path: PathT) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _walk(node: yaml.Node, path: PathT, lines: dict[PathT, int], errors: list[SpecError],
          file: str) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if key == "<<":
                continue
            if key in seen:
                errors.append(SpecError(f"duplicate key {key!r}", file=file,
                                        line=key_node.start_mark.line + 1,
                                        path=format_path((*path, key))))
            seen.add(key)
            lines[(*path, key)] = key_node.start_mark.line + 1
            _walk(value_node, (*path, key), lines, errors, file)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[(*path, i)] = item.start_mark.line + 1
            _walk(item, (*path, i), lines, errors, file)


@dataclass
class LoadedSpec:
    """A validated spec plus what is needed to point at its lines later."""

    spec: TopologySpec
    file: str
    lines: LineMap
    data: dict[str, Any]

    def error(self, path: PathT, message: str) -> SpecError:
        return SpecError(message, file=self.file, line=self.lines.line_of(path),
                         path=format_path(path))


def _data_path(loc: tuple[Any, ...], data: Any) -> PathT:
    """Drop pydantic's union tags from `loc`, keeping only keys/indexes that exist in the data."""
    path: list[str | int] = []
    node = data
    tag_next = False  # pydantic puts a step's kind (its union tag) right after the step index
    for part in loc:
        if tag_next and part in (*STEP_KINDS, "when", "default"):
            tag_next = False
            continue
        # a step (in `steps` or a branch's `default`) or a branch case: a union member
        tag_next = isinstance(part, int) and path[-1:] in (["steps"], ["default"], ["branch"])
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_dict or in_list:
            path.append(part)
            node = node[part]
        elif isinstance(node, dict) and part == "from_" and "from" in node:
            path.append("from")
            node = node["from"]
        elif part == "fields" and path and path[-1] == "aggregate" and isinstance(node, dict):
            continue  # aggregate shorthand: output fields sit directly under `aggregate:`
        elif isinstance(part, str) and part not in ("function-after", "function-before") and (
            isinstance(node, dict) and not any(c in part for c in "[]()")
            and part not in _TAGS
        ):
            # a missing required field: name it, the line is its parent's
            path.append(part)
            node = None
    return tuple(path)


# pydantic's names for union members: the step tags plus the branch types
_TAGS = {*STEP_KINDS, "str", "FieldsProjection", "PythonRef", "SinkSpec", "PythonReducer"}


def _at(data: Any, path: PathT) -> Any:
    try:
        for part in path:
            data = data[part]
    except (KeyError, IndexError, TypeError):
        return None
    return data


def _step_detail(step: Any) -> str:
    """Say what is wrong with a step pydantic could not tag: the generic message lists the
    kinds, this names the offending keys (a typo reads differently from two kinds in one)."""
    if not isinstance(step, dict):
        return f"; got {type(step).__name__} {step!r:.80}"
    keys = [str(k) for k in step if k != "on_error"]
    kinds = [k for k in keys if k in STEP_KINDS]
    others = [k for k in keys if k not in STEP_KINDS]
    if len(kinds) > 1:
        return f"; this one has {len(kinds)}: {', '.join(kinds)} (make each its own step)"
    if kinds:
        return f"; unknown field {', '.join(map(repr, others))} next to {kinds[0]!r}"
    if others:
        return f"; {others[0]!r} is not a step kind"
    return "; this one is empty"


def _pydantic_errors(exc: ValidationError, data: Any, lines: LineMap, file: str) -> list[SpecError]:
    out: list[SpecError] = []
    seen: set[tuple[str, str]] = set()
    errs = [(err, _data_path(tuple(err["loc"]), data)) for err in exc.errors(include_url=False)]
    deeper = {p[:i] for _, p in errs for i in range(len(p))}
    for err, path in errs:
        if err["type"] in ("string_type", "model_type") and path in deeper:
            continue  # a union's "not a string" branch when the mapping branch says more
        msg = err["msg"]
        if err["type"] == "unknown_step":
            msg += _step_detail(_at(data, path))
        elif err["type"] == "string_pattern_mismatch" and (err.get("ctx") or {}).get(
                "pattern") == REF_PATTERN:
            msg = (f"python reference must look like 'package.module:function', got "
                   f"{err['input']!r} (string should match pattern {REF_PATTERN})")
        elif err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == "missing":
            msg = "required field is missing"
        elif err["type"] == "literal_error":
            msg = msg.replace("Input should be", "must be")
        msg = msg.removeprefix("Value error, ")
        key = (format_path(path), msg)
        if key in seen:
            continue
        seen.add(key)
        out.append(SpecError(msg, file=file, line=lines.line_of(path), path=format_path(path)))
    return out


def _yaml_error(exc: yaml.MarkedYAMLError, file: str) -> SpecError:
    """Point at where the parser gave up, and name where the construct it was in began: an
    unclosed bracket is noticed lines after the line that has to be fixed."""
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark else None
    message = f"YAML syntax error: {exc.problem}"
    start = exc.context_mark
    if exc.context and start is not None and start.line + 1 != line:
        message += f" ({exc.context} that starts at line {start.line + 1})"
    return SpecError(message, file=file, line=line)


def parse_mapped(text: str, file: str, model: type[M], not_a_mapping: str,
                 ) -> tuple[M, Any, LineMap, list[SpecError]]:
    """YAML text -> a validated `model`, its data, the line of every key and item, and the
    errors that do not stop validation (duplicate keys). A syntax error, a document that is not
    a mapping (the error says `not_a_mapping`) or a schema error raises SpecErrors, each
    pointing at its file and line."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.load(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        raise SpecErrors([_yaml_error(exc, file)]) from None
    if node is None or not isinstance(data, dict):
        raise SpecErrors([SpecError(not_a_mapping, file=file, line=1)])
    lines: dict[PathT, int] = {}
    errors: list[SpecError] = []
    _walk(node, (), lines, errors, file)
    line_map = LineMap(lines)
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        errors.extend(_pydantic_errors(exc, data, line_map, file))
        raise SpecErrors(errors) from None
    return parsed, data, line_map, errors


def load_spec_text(text: str, file: str = "<string>") -> LoadedSpec:
    """Parse YAML text and validate it: schema (pydantic), then whole-spec checks."""
    spec, data, line_map, errors = parse_mapped(
        text, file, TopologySpec, "a topology must be a YAML mapping with name, sources, pipelines")
    loaded = LoadedSpec(spec=spec, file=file, lines=line_map, data=data)
    errors.extend(check_spec(loaded))
    if errors:
        raise SpecErrors(errors)
    return loaded


def load_spec(path: str | Path) -> LoadedSpec:
    """Read and validate a topology file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecErrors([SpecError(f"cannot read file: {exc.strerror}", file=str(p))]) from None
    # `python: module:function` finds modules next to the topology file, after installed ones
    directory = str(p.resolve().parent)
    if directory not in sys.path:
        sys.path.append(directory)
    return load_spec_text(text, file=str(p))
