"""Property tests for every serde `build_serde` makes: decode of arbitrary bytes either returns a
value or raises DeserializationError, encode of arbitrary JSON-like values either returns bytes
or raises SerializationError (never any other exception, which would escape the runtime's
per-record error handling), and values valid under the schema survive a round trip."""

from __future__ import annotations

import contextlib
import json
import struct
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastavro.validation import validate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processor.serde import (
    DeserializationError,
    SchemaRegistry,
    Serde,
    SerializationError,
    build_serde,
    load_avro_schema,
)
from processor.serde.avro_check import fast_check
from tests.paths import REPO
from tests.unit.serde.registry_server import RegistryServer

SCHEMAS = REPO / "tests" / "fixtures" / "schemas"
V1, V2 = SCHEMAS / "order_v1.avsc", SCHEMAS / "order_v2.avsc"
ORDER_JSON = SCHEMAS / "order.schema.json"
FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

# --- strategies --------------------------------------------------------------------------------

json_scalars = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20))
json_like = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
finite_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
avro_strings = st.text(max_size=24)
orders = st.fixed_dictionaries({
    "id": avro_strings,
    "customer": avro_strings,
    "amount": st.floats(allow_nan=False),
    "quantity": st.integers(-(2**31), 2**31 - 1),
    "ts": st.integers(-(2**63), 2**63 - 1),
    "status": st.sampled_from(["NEW", "PAID", "SHIPPED"]),
    "tags": st.lists(avro_strings, max_size=4),
    "note": st.none() | avro_strings,
})
json_orders = st.fixed_dictionaries(
    {"id": st.text(min_size=1, max_size=16),
     "amount": st.integers(0, 2**53) | st.floats(min_value=0, allow_nan=False, allow_infinity=False)},
    optional={"items": st.lists(st.fixed_dictionaries({"sku": st.text(max_size=8)},
                                                      optional={"qty": st.integers(1, 2**40)}),
                                max_size=3),
              "extra": finite_json},
)


@st.composite
def mutated(draw: st.DrawFn, valid: bytes) -> bytes:
    """A valid encoding cut short, extended, or with some bytes replaced: near misses reach
    deeper into the decoder than uniformly random bytes."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 4))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(data) + 3))
    return bytes(data[:cut]) + draw(st.binary(max_size=3))


def framed(schema_id: int, payload: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", schema_id) + payload


# --- serdes under test -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server() -> Iterator[RegistryServer]:
    with RegistryServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def serdes(server: RegistryServer) -> dict[str, Serde]:
    registry = SchemaRegistry(server.url)
    return {
        "json": build_serde("json"),
        "json+schema": build_serde("json", schema=ORDER_JSON),
        "string": build_serde("string"),
        "bytes": build_serde("bytes"),
        "avro": build_serde("avro", schema=V1),
        "avro v1->v2": build_serde("avro", schema=V1, reader_schema=V2),
        "avro_registry": build_serde("avro_registry", registry=registry, schema=V1, subject="f-value"),
        "avro_registry v2 reader": build_serde("avro_registry", registry=registry, reader_schema=V2),
    }


NAMES = ["json", "json+schema", "string", "bytes", "avro", "avro v1->v2", "avro_registry",
         "avro_registry v2 reader"]
SAMPLE = {"id": "o-1", "customer": "c", "amount": 1.5, "quantity": 2, "ts": 3, "status": "NEW",
          "tags": ["t"], "note": None}


any_bytes = st.binary(max_size=64) | st.builds(
    framed, st.sampled_from([1, 7]) | st.integers(0, 2**32 - 1), st.binary(max_size=48))


@pytest.mark.parametrize("name", NAMES)
@FUZZ
@given(data=any_bytes)
def test_decode_of_arbitrary_bytes_returns_or_raises_deserialization_error(serdes, name, data):
    with contextlib.suppress(DeserializationError):
        serdes[name].decode(data)


@pytest.mark.parametrize("name", ["avro", "avro v1->v2"])
@FUZZ
@given(st.data())
def test_decode_of_near_miss_avro(serdes, name, data):
    valid = serdes["avro"].encode(SAMPLE)
    with contextlib.suppress(DeserializationError):
        serdes[name].decode(data.draw(mutated(valid)))


@FUZZ
@given(st.data())
def test_decode_of_near_miss_registry_frames(serdes, server, data):
    payload = serdes["avro"].encode(SAMPLE)
    schema_id = data.draw(st.sampled_from([1, 1, 1, 2**32 - 1, 7]))
    frame = data.draw(mutated(framed(schema_id, payload)) | st.just(framed(schema_id, payload)))
    for name in ("avro_registry", "avro_registry v2 reader"):
        try:
            serdes[name].decode(frame)
        except DeserializationError as exc:
            assert not exc.transient  # the registry is up: nothing here is worth retrying


@pytest.mark.parametrize("name", NAMES)
@FUZZ
@given(value=json_like)
def test_encode_of_json_like_values_returns_bytes_or_raises_serialization_error(serdes, name, value):
    try:
        data = serdes[name].encode(value)
    except SerializationError:
        return
    assert data is None if value is None else isinstance(data, bytes)


@FUZZ
@given(record=orders)
def test_avro_round_trip_of_schema_conformant_records(serdes, record):
    data = serdes["avro"].encode(record)
    assert serdes["avro"].decode(data) == record
    assert serdes["avro v1->v2"].decode(data) == {**record, "currency": "EUR"}
    framed_data = serdes["avro_registry"].encode(record)
    assert framed_data[5:] == data
    assert serdes["avro_registry"].decode(framed_data) == record
    assert serdes["avro_registry v2 reader"].decode(framed_data) == {**record, "currency": "EUR"}


@FUZZ
@given(value=json_orders)
def test_json_schema_round_trip_of_valid_values(serdes, value):
    serde = serdes["json+schema"]
    assert serde.decode(serde.encode(value)) == value
    assert serde.decode(json.dumps(value).encode()) == value


@FUZZ
@given(value=finite_json)
def test_json_round_trip(serdes, value):
    assert serdes["json"].decode(serdes["json"].encode(value)) == value


@FUZZ
@given(text=st.text(), raw=st.binary())
def test_string_and_bytes_round_trip(serdes, text, raw):
    assert serdes["string"].decode(serdes["string"].encode(text)) == text
    assert serdes["bytes"].decode(serdes["bytes"].encode(raw)) == raw


def test_registry_fuzzing_stays_within_one_request_per_id(serdes, server):
    """The properties above decode thousands of frames; the registry saw a handful of requests."""
    for schema_id in (1, 7, 2**32 - 1):
        with contextlib.suppress(DeserializationError):
            serdes["avro_registry v2 reader"].decode(framed(schema_id, b""))
    for schema_id in (1, 7, 2**32 - 1):
        assert server.count("GET", f"/schemas/ids/{schema_id}") <= 1
    assert server.count("POST", "/subjects/*") <= 1


@FUZZ
@given(value=st.builds(lambda order, field, junk: {**order, field: junk},
                       orders, st.sampled_from(sorted(SAMPLE)), json_like))
def test_avro_encode_never_silently_changes_a_value(serdes, value):
    """A record with one field replaced by anything JSON-like: either encode refuses it, or the
    bytes decode to the same fields (fastavro alone would write 1.5 or True as int 1)."""
    try:
        data = serdes["avro"].encode(value)
    except SerializationError:
        return
    expected = {name: value.get(name, default) for name, default in
                {**dict.fromkeys(SAMPLE), "tags": [], "note": None}.items()}
    decoded = serdes["avro"].decode(data)
    assert decoded == expected
    assert all(type(decoded[k]) is type(expected[k]) for k in expected if k != "amount")


# --- the fast encode check agrees with fastavro's validate ---------------------------------------

ALL_TYPES = SCHEMAS / "all_types.avsc"
int32, int64 = st.integers(-(2**31), 2**31 - 1), st.integers(-(2**63), 2**63 - 1)
colors = st.sampled_from(["RED", "GREEN"])
four = st.binary(min_size=4, max_size=4)
junk = (json_like | st.binary(max_size=6) | st.integers() | st.datetimes() | st.just("BLUE")
        | st.tuples(st.sampled_from(["test.Color", "int", "x"]), json_like)
        | st.builds(bytearray, four) | st.builds(tuple, st.lists(int32, max_size=2))
        | st.just({"-type": "test.Inner", "x": "a"}))
all_types_records = st.deferred(lambda: st.fixed_dictionaries({
    "n": st.none(), "b": st.booleans(), "i": int32, "l": int64, "f": st.floats(width=32),
    "d": st.floats(), "by": st.binary(max_size=8), "s": st.text(max_size=8), "fx": four,
    "e": colors, "a": st.lists(st.none() | int32 | colors, max_size=3),
    "m": st.dictionaries(st.text(max_size=4), four, max_size=2),
    "ts": int64 | st.datetimes(timezones=st.just(UTC)),
    "next": st.none() | st.just(None) | all_types_records,
    "inner": st.fixed_dictionaries({}, optional={"x": st.text(max_size=4) | st.floats()}),
}))


@st.composite
def near_valid(draw: st.DrawFn) -> tuple[dict[str, Any], bool]:
    """A valid AllTypes record, and half the time one field replaced by junk or left out."""
    record = draw(all_types_records)
    if draw(st.booleans()):
        return record, False
    target, field = record, draw(st.sampled_from(sorted(record)))
    while field in ("next", "inner") and isinstance(target.get(field), dict) and draw(st.booleans()):
        target = target[field]
        field = draw(st.sampled_from(sorted(target) or ["x"]))
    if draw(st.booleans()):
        target.pop(field, None)
    else:
        target[field] = draw(junk)
    return record, True


@FUZZ
@given(case=near_valid())
def test_fast_check_accepts_only_what_fastavro_validate_accepts(case):
    record, modified = case
    schema = load_avro_schema(ALL_TYPES)
    fits = fast_check(schema)(record)
    if fits:
        assert validate(record, schema, raise_errors=True)
    if not modified and not _has_datetime(record):
        assert fits  # the fast path is taken for plain valid records
    try:
        build_serde("avro", schema=ALL_TYPES).encode(record)
    except SerializationError:
        assert modified  # a valid record always encodes


def _has_datetime(record: dict[str, Any]) -> bool:
    return isinstance(record["ts"], datetime) or (
        isinstance(record["next"], dict) and _has_datetime(record["next"]))
