"""Key/value formats: round trips, and None (a tombstone) stays None."""

from __future__ import annotations

import pytest

from processor.serde import SCHEMALESS_FORMATS as FORMATS
from processor.serde import serde_for


@pytest.mark.parametrize("fmt", FORMATS)
def test_none_stays_none(fmt):
    serde = serde_for(fmt)
    assert serde.name == fmt
    assert serde.encode(None) is None
    assert serde.decode(None) is None


@pytest.mark.parametrize(
    "value",
    [
        {"user": "u1", "amount": 12.5, "tags": ["a", "b"], "nested": {"ok": True, "none": None}},
        [1, 2.25, "x", None, False],
        "plain string with ünïcödé",
        0,
        -7,
        3.125,
        True,
        {},
        [],
    ],
)
def test_json_round_trip(value):
    serde = serde_for("json")
    data = serde.encode(value)
    assert isinstance(data, bytes)
    assert serde.decode(data) == value


def test_json_encodes_compactly_and_non_string_keys_become_strings():
    serde = serde_for("json")
    assert serde.encode({"a": 1, "b": [1, 2]}) == b'{"a":1,"b":[1,2]}'
    assert serde.decode(serde.encode({1: "x"})) == {"1": "x"}


def test_json_decode_rejects_invalid_bytes():
    with pytest.raises(ValueError):
        serde_for("json").decode(b"{not json")


@pytest.mark.parametrize("value", ["", "abc", "ünïcödé ✓", "with\nnewline"])
def test_string_round_trip(value):
    serde = serde_for("string")
    data = serde.encode(value)
    assert data == value.encode("utf-8")
    assert serde.decode(data) == value


def test_string_encodes_bytes_as_is_and_other_values_with_str():
    serde = serde_for("string")
    assert serde.encode(b"raw") == b"raw"
    assert serde.encode(42) == b"42"
    assert serde.encode(1.5) == b"1.5"


def test_string_decode_rejects_invalid_utf8():
    with pytest.raises(UnicodeDecodeError):
        serde_for("string").decode(b"\xff\xfe")


@pytest.mark.parametrize("value", [b"", b"\x00\x01\xff", bytes(range(256))])
def test_bytes_round_trip(value):
    serde = serde_for("bytes")
    assert serde.encode(value) == value
    assert serde.decode(serde.encode(value)) == value


def test_bytes_accepts_str_bytearray_memoryview():
    encode = serde_for("bytes").encode
    assert encode("hé") == "hé".encode()
    assert encode(bytearray(b"ab")) == b"ab"
    assert encode(memoryview(b"cd")) == b"cd"
    assert type(encode(bytearray(b"ab"))) is bytes


def test_bytes_rejects_other_types():
    with pytest.raises(TypeError, match="bytes format needs bytes or str, got int"):
        serde_for("bytes").encode(5)


def test_unknown_format():
    with pytest.raises(ValueError, match="unknown format 'xml' \\(known: json, string, bytes\\)"):
        serde_for("xml")
