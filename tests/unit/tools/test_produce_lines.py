"""`processor produce` input lines: plain JSON values with an optional key field, or envelopes."""

from __future__ import annotations

import orjson
import pytest

from processor.errors import ProcessorError
from processor.tools.produce import read_records


def test_plain_lines_are_values_and_the_key_field_is_the_key() -> None:
    recs = list(read_records(['{"user": "u1", "n": 1}', "", '{"user": 7}'], "in.jsonl",
                             key_field="user", envelope=False))
    assert [(r.key, orjson.loads(r.value)) for r in recs] == [
        (b"u1", {"user": "u1", "n": 1}), (b"7", {"user": 7})]
    assert all(r.timestamp is None and not r.headers for r in recs)


def test_envelopes_carry_key_timestamp_and_headers() -> None:
    line = '{"key": "k", "value": {"a": 1}, "timestamp": 1700000000000, "headers": {"h": "v"}}'
    (rec,) = read_records([line], "stdin", key_field=None, envelope=True)
    assert (rec.key, orjson.loads(rec.value), rec.timestamp, rec.headers) == (
        b"k", {"a": 1}, 1700000000000, [("h", b"v")])
    (tomb,) = read_records(['{"key": "k", "value": null}'], "stdin", key_field=None, envelope=True)
    assert tomb.value is None


@pytest.mark.parametrize(("lines", "key_field", "envelope", "message"), [
    (['{"a": 1}', "{not json"], None, False, "in.jsonl:2: not a JSON value"),
    (['{"a": 1}'], "user", False, "in.jsonl:1: no field 'user'"),
    (['{"key": "k"}'], None, True, 'in.jsonl:1: --envelope expects an object with "value"'),
    (['{"value": 1, "timestamp": "today"}'], None, True, "epoch milliseconds"),
])
def test_a_bad_line_names_the_file_and_line(lines: list[str], key_field: str | None,
                                            envelope: bool, message: str) -> None:
    with pytest.raises(ProcessorError, match=message):
        list(read_records(lines, "in.jsonl", key_field=key_field, envelope=envelope))
