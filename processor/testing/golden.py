"""`processor test --update`: a case's actual outputs written into its test file as the new
expectation, with the rest of the file kept byte for byte as its author wrote it.

Re-dumping the YAML would lose comments, quoting, key order and the layout of every other
case. Instead the file is composed into a node tree, whose nodes know where they start and end
in the text, and only the expectation's text is replaced: the value of each `expect:` entry
(in the long form only its `records:`, so `match`, `ordered` and `ignore` stay), new entries
after the last one, an `expect:` block after the case's last key when it has none. Expected
records are written one per line in flow style, so a changed output is a one-line diff. The
result is parsed back and compared with the intended data before the file is written.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import CollectionNode, MappingNode, Node, ScalarNode

from processor.errors import ProcessorError
from processor.testing.cases import Case, Expected, LoadedTests, without

Outputs = dict[str, list[dict[str, Any]]]
Edit = tuple[int, int, str]  # text[start:end] replaced by the string ("\n" line breaks)

UNSTABLE_HEADERS = frozenset({"processor.error.time"})


def write_expectations(loaded: LoadedTests, actual: dict[int, Outputs],
                       sink_topics: dict[str, str]) -> None:
    """Each case of `actual` (by index) gets its outputs as its expectation: an `expect:`
    entry names a sink (`sink_topics`: sink name -> topic) or a topic; output topics with
    records that no entry names are added under their topic name."""
    with open(loaded.path, encoding="utf-8", newline="") as f:
        text = f.read()
    intended = yaml.safe_load(text)
    if intended != loaded.data:
        raise ProcessorError(f"{loaded.path}: changed while the tests ran; not updated")
    # the file is the one validated: a mapping with a list of cases, each a mapping
    cases = _entry(yaml.compose(text, Loader=yaml.SafeLoader), "tests")[1]
    edits: list[Edit] = []
    for i, outputs in sorted(actual.items()):
        case_edits, expect = _case(text, cases.value[i], loaded.tests.tests[i], outputs,
                                   sink_topics)
        edits += case_edits
        if expect:
            intended["tests"][i]["expect"] = expect
    new_text = _apply(text, edits, "\r\n" if "\r\n" in text else "\n")
    try:
        written = yaml.safe_load(new_text)
    except yaml.YAMLError:
        written = None
    if written != intended:
        raise ProcessorError(f"{loaded.path}: --update could not rewrite the expectations in "
                             "place (anchors or aliases under `expect:`?); the file is unchanged")
    with open(loaded.path, "w", encoding="utf-8", newline="") as f:
        f.write(new_text)


def golden(record: dict[str, Any], ignore: list[str]) -> dict[str, Any]:
    """A record as an expectation: key, value, timestamp and headers, without the fields the
    expectation ignores and the headers that differ from run to run (a dead letter's
    wall-clock time)."""
    record = without(record, ignore)
    out = {f: record[f] for f in ("key", "value", "timestamp") if f in record}
    headers = {k: v for k, v in record.get("headers", {}).items() if k not in UNSTABLE_HEADERS}
    if headers:
        out["headers"] = headers
    return out


def _case(text: str, node: MappingNode, case: Case, outputs: Outputs,
          sink_topics: dict[str, str]) -> tuple[list[Edit], dict[str, Any]]:
    """The edits of one case and its new `expect` (as data, for the check)."""
    entry = _entry(node, "expect")
    if entry is None:
        added = {t: [golden(r, []) for r in recs] for t, recs in outputs.items() if recs}
        return ([_append(text, node, {"expect": added})] if added else []), added
    key, value = entry  # a mapping (validated)
    edits: list[Edit] = []
    expect: dict[str, Any] = {}
    covered = set()
    for name_node, v in value.value:
        name = name_node.value
        topic = sink_topics.get(name, name)
        covered.add(topic)
        expected = case.expect[name]
        if isinstance(expected, Expected):  # long form: only `records:` changes
            records = [golden(r, expected.ignore) for r in outputs.get(topic, [])]
            records_key, records_value = _entry(v, "records")  # required in the long form
            edits.append(_set(text, v, records_key, records_value, records))
            expect[name] = {**_data(v), "records": records}
        else:
            records = [golden(r, []) for r in outputs.get(topic, [])]
            edits.append(_set(text, value, name_node, v, records))
            expect[name] = records
    added = {t: [golden(r, []) for r in recs] for t, recs in outputs.items()
             if recs and t not in covered}
    if added:
        if value.flow_style and not node.flow_style:  # `expect: {}`: written in block style
            edits = [_set_mapping(text, key, value, {**expect, **added})]
        else:
            edits.append(_append(text, value, added))
        expect.update(added)
    return edits, expect


def _set(text: str, parent: MappingNode, key: Node, value: Node,
         records: list[dict[str, Any]]) -> Edit:
    """`key: value` of a block or flow mapping with `records` as the value."""
    start, end = value.start_mark.index, _end(text, value)
    after_key = text[key.end_mark.index:start].strip() == ":"  # no comment in between
    if parent.flow_style:
        return start, end, _flow(records)
    if not records:
        return (key.end_mark.index, end, ": []") if after_key else (start, end, "[]")
    if isinstance(value, CollectionNode) and not value.flow_style:
        # the items go where the value starts, a comment on the last one's line with them
        return start, _line_end(text, end), _items(records, value.start_mark.column)
    if not after_key:  # a comment between key and value stays
        return start, end, _items(records, value.start_mark.column)
    column = key.start_mark.column + 2
    return key.end_mark.index, end, ":\n" + " " * column + _items(records, column)


def _set_mapping(text: str, key: Node, value: MappingNode, entries: dict[str, Any]) -> Edit:
    """A flow-style mapping value replaced by `entries` in block style."""
    column = key.start_mark.column + 2
    return key.end_mark.index, _end(text, value), ":" + _block(entries, column)


def _append(text: str, mapping: MappingNode, entries: dict[str, Any]) -> Edit:
    """`entries` added after the mapping's last key (at the end of its line, so a comment
    there stays where it is)."""
    if mapping.flow_style:
        at = mapping.end_mark.index - 1  # before the closing brace
        body = ", ".join(f"{_flow(k)}: {_flow(v)}" for k, v in entries.items())
        return at, at, (", " if mapping.value else "") + body
    at = _line_end(text, _end(text, mapping))
    return at, at, _block(entries, mapping.value[0][0].start_mark.column)


def _line_end(text: str, at: int) -> int:
    """Where the line holding `at` ends (before its line break)."""
    end = text.find("\n", at)
    return len(text) if end < 0 else end - (text[end - 1] == "\r")


def _block(entries: dict[str, Any], column: int) -> str:
    """Block-style `key: value` lines (each preceded by a line break) at `column`; a list of
    records one per line, a mapping (an expectation's long form, or `expect` itself) nested."""
    out = ""
    for k, v in entries.items():
        out += "\n" + " " * column + _flow(k) + ":"
        if isinstance(v, list) and v:
            out += "\n" + " " * (column + 2) + _items(v, column + 2)
        elif isinstance(v, dict) and v:
            out += _block(v, column + 2)
        else:
            out += " " + _flow(v)
    return out


def _items(records: list[dict[str, Any]], column: int) -> str:
    return ("\n" + " " * column).join(f"- {_flow(r)}" for r in records)


class _OneLine(yaml.SafeDumper):
    """Strings with line breaks double-quoted (`\\n`), so every record stays on one line."""


_OneLine.add_representer(str, lambda dumper, s: dumper.represent_scalar(
    "tag:yaml.org,2002:str", s, style='"' if "\n" in s or "\r" in s else None))


def _flow(value: Any) -> str:
    """A value as one line of flow-style YAML (dumped in a list: a bare scalar would get a
    document end marker)."""
    return yaml.dump([value], Dumper=_OneLine, default_flow_style=True, width=1 << 30,
                     allow_unicode=True, sort_keys=False).strip()[1:-1]


def _entry(mapping: Node, name: str) -> tuple[Node, Node] | None:
    return next(((k, v) for k, v in mapping.value
                 if isinstance(k, ScalarNode) and k.value == name), None)


def _end(text: str, node: Node) -> int:
    """Where a node's text ends: a block collection's end mark is the next token's start
    (past comments and blank lines after it), so it ends where its last leaf does."""
    while isinstance(node, CollectionNode) and not node.flow_style and node.value:
        last = node.value[-1]
        node = last[1] if isinstance(node, MappingNode) else last
    end = node.end_mark.index
    while end > node.start_mark.index and text[end - 1] in " \t\r\n":  # a block scalar's
        end -= 1
    return end


def _data(node: Node) -> Any:
    return yaml.SafeLoader("").construct_document(node)


def _apply(text: str, edits: list[Edit], newline: str) -> str:
    for start, end, new in sorted(edits, reverse=True):
        text = text[:start] + new.replace("\n", newline) + text[end:]
    return text

