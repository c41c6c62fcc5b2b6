"""Serdes with schemas: Avro (schema file and Confluent Schema Registry wire format), JSON Schema
validation, schema evolution, registry caching and auth, and the errors each failure raises."""

from __future__ import annotations

import base64
import io
import json
import struct
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastavro
import pytest

from processor.serde import (
    FORMATS,
    DeserializationError,
    RegistryError,
    RegistryUnavailable,
    RegistryUnavailableOnEncode,
    SchemaError,
    SchemaRegistry,
    SerdeError,
    SerializationError,
    build_serde,
    load_avro_schema,
    load_json_schema,
    serde_for,
)
from tests.paths import REPO
from tests.unit.serde.registry_server import RegistryServer

SCHEMAS = REPO / "tests" / "fixtures" / "schemas"
V1, V2 = SCHEMAS / "order_v1.avsc", SCHEMAS / "order_v2.avsc"
V2_BAD = SCHEMAS / "order_v2_incompatible.avsc"
ORDER_JSON = SCHEMAS / "order.schema.json"
ORDER = {"id": "o-1", "customer": "c-9", "amount": 12.5, "quantity": 3, "ts": 1_700_000_000_000,
         "status": "PAID", "tags": ["gift", "rush"], "note": None}
SECRET = "s3cr3t-Pa55"


@pytest.fixture
def server() -> Iterator[RegistryServer]:
    with RegistryServer() as srv:
        yield srv


@pytest.fixture
def auth_server() -> Iterator[RegistryServer]:
    with RegistryServer(credentials=("svc", SECRET)) as srv:
        yield srv


def registry_serde(srv: RegistryServer, **options: Any) -> Any:
    return build_serde("avro_registry", registry=SchemaRegistry(srv.url), **options)


def schemaless(record: dict[str, Any], path: Path = V1) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(json.loads(path.read_text())), record)
    return out.getvalue()


def error_texts(exc: BaseException) -> str:
    """Everything a log line or traceback could show of `exc` and the exceptions behind it."""
    texts = []
    seen: BaseException | None = exc
    while seen is not None:
        texts += [str(seen), repr(seen), *map(str, seen.args)]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(texts)


# --- Avro with a schema file ---------------------------------------------------------------

@pytest.mark.parametrize("record", [
    ORDER,
    {**ORDER, "note": "leave at door ✓", "tags": [], "amount": -0.0, "quantity": -(2**31)},
    {**ORDER, "id": "", "ts": 2**63 - 1, "status": "SHIPPED", "quantity": 2**31 - 1},
])
def test_avro_round_trip_is_plain_schemaless_binary(record):
    serde = build_serde("avro", schema=V1)
    data = serde.encode(record)
    assert data == schemaless(record)
    decoded = serde.decode(data)
    assert decoded == record
    assert type(decoded) is dict


def test_avro_fills_defaults_of_fields_left_out():
    serde = build_serde("avro", schema=V1)
    record = {k: v for k, v in ORDER.items() if k not in ("tags", "note")}
    assert serde.decode(serde.encode(record)) == {**record, "tags": [], "note": None}


def test_avro_evolution_old_bytes_read_with_new_schema_get_the_default():
    old_bytes = build_serde("avro", schema=V1).encode(ORDER)
    reader = build_serde("avro", schema=V1, reader_schema=V2)
    assert reader.decode(old_bytes) == {**ORDER, "currency": "EUR"}


def test_avro_incompatible_reader_schema_is_a_decode_error():
    serde = build_serde("avro", schema=V1, reader_schema=V2_BAD)
    with pytest.raises(DeserializationError, match="writer schema cannot be read with the reader schema"):
        serde.decode(schemaless(ORDER))


@pytest.mark.parametrize(("value", "message"), [
    ({**ORDER, "quantity": 1.5}, "field shop.Order.quantity is float 1.5, expected int"),
    ({**ORDER, "quantity": True}, "field shop.Order.quantity is bool True, expected int"),
    ({**ORDER, "quantity": 2**31}, "field shop.Order.quantity is int 2147483648, expected int"),
    ({**ORDER, "status": "LOST"}, "field shop.Order.status is str 'LOST', expected enum shop.Status"),
    ({**ORDER, "note": 5}, "field shop.Order.note is int 5, expected null | string"),
    ({**ORDER, "tags": ["ok", 7]}, "field shop.Order.tags is int 7, expected string"),
    ({k: v for k, v in ORDER.items() if k != "amount"}, "field shop.Order.amount is NoneType None"),
    ([ORDER], "value is list"),
    ("o-1", "value is str 'o-1', expected record shop.Order"),
])
def test_avro_encode_rejects_values_that_do_not_fit(value, message):
    with pytest.raises(SerializationError) as info:
        build_serde("avro", schema=V1).encode(value)
    assert str(info.value).startswith("avro: " + message)
    assert str(info.value).endswith(f"(schema {V1})")


def test_avro_decode_truncated_data_names_the_byte():
    data = schemaless(ORDER)
    serde = build_serde("avro", schema=V1)
    with pytest.raises(DeserializationError) as info:
        serde.decode(data[:17])
    assert str(info.value) == f"avro: truncated data at byte 17 of 17 (schema {V1})"


def test_avro_decode_rejects_trailing_bytes():
    data = schemaless(ORDER)
    with pytest.raises(DeserializationError, match=f"avro: 2 bytes left after the record at byte "
                                                   f"{len(data)} of {len(data) + 2}"):
        build_serde("avro", schema=V1).decode(data + b"\x00\x00")


def test_avro_decode_garbage_and_bad_utf8_are_decode_errors():
    serde = build_serde("avro", schema=V1)
    with pytest.raises(DeserializationError, match="avro: invalid UTF-8 in a string ending at byte 4"):
        serde.decode(b"\x06\xff\xfe\xfd" + schemaless(ORDER)[4:])
    with pytest.raises(DeserializationError, match="avro: "):
        serde.decode(b"\xff" * 12)


# --- Confluent wire format --------------------------------------------------------------------

def test_registry_round_trip_uses_the_confluent_wire_format(server):
    serde = registry_serde(server, schema=V1, subject="orders-value")
    data = serde.encode(ORDER)
    assert data[0] == 0
    (schema_id,) = struct.unpack(">I", data[1:5])
    assert schema_id == 1
    assert data[5:] == schemaless(ORDER)
    assert serde.decode(data) == ORDER
    # a second client (a consumer) fetches the writer schema by id and reads the same value
    assert registry_serde(server).decode(data) == ORDER
    assert json.loads(server.schemas[1]["schema"]) == json.loads(V1.read_text())
    assert server.subjects == {"orders-value": [1]}


def test_registry_register_request_follows_the_rest_api(server):
    registry_serde(server, schema=V1, subject="orders-value").encode(ORDER)
    (post,) = server.requests
    assert (post.method, post.path) == ("POST", "/subjects/orders-value/versions")
    assert post.content_type == "application/vnd.schemaregistry.v1+json"
    body = json.loads(post.body)
    assert set(body) == {"schema"}
    assert json.loads(body["schema"]) == json.loads(V1.read_text())


def test_registry_evolution_reader_schema_applies_to_fetched_writer_schema(server):
    old = registry_serde(server, schema=V1, subject="orders-value").encode(ORDER)
    new = registry_serde(server, schema=V2, subject="orders-value", reader_schema=V2)
    assert new.decode(old) == {**ORDER, "currency": "EUR"}
    assert new.decode(new.encode({**ORDER, "currency": "USD"}))["currency"] == "USD"
    assert new.encode(ORDER)[1:5] == struct.pack(">I", 2)  # v2 got its own id


def test_registry_one_request_per_schema_id_never_per_record(server):
    v1_bytes = [registry_serde(server, schema=V1, subject="s").encode({**ORDER, "quantity": i})
                for i in range(3)]
    v2_bytes = registry_serde(server, schema=V2, subject="s").encode({**ORDER, "currency": "USD"})
    assert server.count("POST", "/subjects/*") == 4  # one per new client (each has its own cache)
    consumer = registry_serde(server)
    for _ in range(50):
        for data in [*v1_bytes, v2_bytes]:
            consumer.decode(data)
    assert server.count("GET", "/schemas/ids/1") == 1
    assert server.count("GET", "/schemas/ids/2") == 1
    producer = registry_serde(server, schema=V1, subject="s")
    posts = server.count("POST", "/subjects/*")
    for i in range(100):
        assert producer.decode(producer.encode({**ORDER, "quantity": i}))["quantity"] == i
    assert server.count("POST", "/subjects/*") == posts + 1
    assert server.count("GET", "/schemas/*") == 2  # the producer knows the id it registered


def test_registry_unknown_id_is_a_decode_error_and_is_not_refetched_per_record(server):
    consumer = registry_serde(server)
    data = b"\x00" + struct.pack(">I", 42) + schemaless(ORDER)
    for _ in range(10):
        with pytest.raises(DeserializationError) as info:
            consumer.decode(data)
        assert str(info.value) == f"avro_registry: unknown schema id 42 (registry {server.url}: HTTP 404)"
        assert not info.value.transient
    assert server.count("GET", "/schemas/ids/42") == 1


def test_registry_non_avro_schema_is_a_decode_error_asked_for_once(server):
    server.schemas[5] = {"schema": 'syntax = "proto3"; message M {}', "schemaType": "PROTOBUF"}
    consumer = registry_serde(server)
    for _ in range(3):
        with pytest.raises(DeserializationError) as info:
            consumer.decode(b"\x00\x00\x00\x00\x05\x02")
        assert str(info.value) == ("avro_registry: cannot use schema id 5: schema 5 is a PROTOBUF "
                                   "schema, not Avro")
        assert not info.value.transient
    assert server.count("GET", "/schemas/ids/5") == 1


@pytest.mark.parametrize(("data", "message"), [
    (b"{\"a\": 1}", "avro_registry: bad magic byte 0x7b (expected 0x00: not Confluent wire format)"),
    (b"\x00\x00\x00", "avro_registry: 3 bytes is too short for the 5-byte header"),
    (b"", "avro_registry: 0 bytes is too short"),
])
def test_registry_bad_framing(server, data, message):
    with pytest.raises(DeserializationError) as info:
        registry_serde(server).decode(data)
    assert str(info.value).startswith(message)
    assert server.requests == []


def test_registry_truncated_payload(server):
    data = registry_serde(server, schema=V1, subject="s").encode(ORDER)
    with pytest.raises(DeserializationError) as info:
        registry_serde(server).decode(data[:-4])
    assert str(info.value) == f"avro_registry: truncated data at byte {len(data) - 4} of " \
                              f"{len(data) - 4} (schema id 1)"


def test_registry_unreachable_is_transient_and_retried(server):
    data = registry_serde(server, schema=V1, subject="s").encode(ORDER)
    consumer = registry_serde(server)
    server.fail_next(503)
    with pytest.raises(RegistryUnavailable) as info:
        consumer.decode(data)
    assert isinstance(info.value, DeserializationError)
    assert info.value.transient
    assert "HTTP 503" in str(info.value)
    assert consumer.decode(data) == ORDER  # a failure is not cached


def test_registry_down_on_decode_and_on_encode():
    with RegistryServer() as srv:
        url = srv.url  # a port that nothing listens on once the server has stopped
    registry = SchemaRegistry(url, timeout_s=2)
    with pytest.raises(RegistryUnavailable, match=r"avro_registry: cannot fetch schema id 1: .*unreachable"):
        build_serde("avro_registry", registry=registry).decode(b"\x00\x00\x00\x00\x01\x00")
    producer = build_serde("avro_registry", registry=registry, schema=V1, subject="s")
    with pytest.raises(RegistryUnavailableOnEncode, match=r"cannot register .* under subject 's'") as info:
        producer.encode(ORDER)
    assert isinstance(info.value, SerializationError)
    assert info.value.transient


def test_registry_basic_auth_is_sent_and_password_never_shown(auth_server):
    good = SchemaRegistry(auth_server.url, username="svc", password=SECRET)
    data = build_serde("avro_registry", registry=good, schema=V1, subject="s").encode(ORDER)
    assert build_serde("avro_registry", registry=good).decode(data) == ORDER
    expected = "Basic " + base64.b64encode(f"svc:{SECRET}".encode()).decode()
    assert {r.authorization for r in auth_server.requests} == {expected}
    assert SECRET not in repr(good)
    assert "password=***" in repr(good)

    # refused credentials are not the record's fault: retry (after fixing them), don't dead-letter
    wrong = SchemaRegistry(auth_server.url, username="svc", password=SECRET + "x")
    with pytest.raises(RegistryUnavailable) as info:
        build_serde("avro_registry", registry=wrong).decode(data)
    assert "HTTP 401 (Unauthorized, error 401)" in str(info.value)
    with pytest.raises(RegistryUnavailableOnEncode) as enc_info:
        build_serde("avro_registry", registry=wrong, schema=V1, subject="t").encode(ORDER)
    with pytest.raises(RegistryError) as direct:
        wrong.schema_by_id(1)
    assert direct.value.status == 401
    for exc in (info.value, enc_info.value, direct.value):
        assert SECRET not in error_texts(exc)


def test_registry_credentials_in_the_url_are_used_and_hidden(auth_server):
    host = auth_server.url.removeprefix("http://")
    registry = SchemaRegistry(f"http://svc:{SECRET}@{host}/")
    assert registry.url == auth_server.url
    assert SECRET not in repr(registry)
    assert registry.register("s", json.loads(V1.read_text())) == 1
    down = SchemaRegistry(f"http://svc:{SECRET}@127.0.0.1:1", timeout_s=1)
    with pytest.raises(RegistryError) as info:
        down.schema_by_id(3)
    assert info.value.transient
    assert SECRET not in error_texts(info.value)
    for url in ("localhost:8081", f"http://svc:{SECRET}@host:port", "ftp://host"):
        with pytest.raises(SchemaError, match="schema registry URL must be http") as bad:
            SchemaRegistry(url)
        assert SECRET not in error_texts(bad.value)


# --- JSON with a JSON Schema ------------------------------------------------------------------

def test_json_schema_accepts_valid_values_both_ways():
    serde = build_serde("json", schema=ORDER_JSON)
    value = {"id": "o-1", "amount": 3, "items": [{"sku": "a", "qty": 2}], "extra": True}
    assert serde.decode(serde.encode(value)) == value
    assert serde.encode(value) == serde_for("json").encode(value)


@pytest.mark.parametrize(("value", "message"), [
    ({"id": "o-1", "amount": "12"}, "json schema: value.amount must be number"),
    ({"id": "o-1"}, "json schema: value must contain ['amount'] properties"),
    ({"id": "o-1", "amount": 1, "items": [{"sku": "a"}, {"sku": 5}]},
     "json schema: value.items[1].sku must be string"),
    ({"id": "o-1", "amount": -1}, "json schema: value.amount must be bigger than or equal to 0"),
    ([1, 2], "json schema: value must be object"),
])
def test_json_schema_violations_name_the_path(value, message):
    serde = build_serde("json", schema=ORDER_JSON)
    with pytest.raises(DeserializationError) as decode_info:
        serde.decode(json.dumps(value).encode())
    with pytest.raises(SerializationError) as encode_info:
        serde.encode(value)
    expected = f"{message} (schema {ORDER_JSON})"
    assert str(decode_info.value) == str(encode_info.value) == expected


def test_json_schema_does_not_fill_defaults_into_values(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('{"type": "object", "properties": {"a": {"type": "integer", "default": 1}}}')
    value: dict[str, Any] = {}
    serde = build_serde("json", schema=path)
    assert serde.encode(value) == b"{}"
    assert value == {}
    assert serde.decode(b"{}") == {}


@pytest.mark.parametrize("schema", [None, ORDER_JSON])
def test_json_invalid_bytes(schema):
    with pytest.raises(DeserializationError) as info:
        build_serde("json", schema=schema).decode(b'{"id": x}')
    assert str(info.value).startswith("json: invalid JSON at position 7 (")


def test_json_encode_of_unserialisable_value():
    with pytest.raises(SerializationError, match="json: cannot encode set: Type is not JSON serializable"):
        build_serde("json").encode({1, 2})


def test_string_and_bytes_from_build_serde_raise_serde_errors():
    with pytest.raises(DeserializationError, match="string: invalid UTF-8 at byte 1"):
        build_serde("string").decode(b"a\xff")
    with pytest.raises(SerializationError, match="bytes: bytes format needs bytes or str, got int"):
        build_serde("bytes").encode(5)
    assert build_serde("string").decode("ü".encode()) == "ü"
    assert build_serde("bytes").encode(bytearray(b"ab")) == b"ab"


# --- every format ---------------------------------------------------------------------------

def test_formats_lists_all_five():
    assert set(FORMATS) == {"json", "string", "bytes", "avro", "avro_registry"}


def test_tombstones_pass_through_every_format(server):
    serdes = [build_serde("json"), build_serde("json", schema=ORDER_JSON), build_serde("string"),
              build_serde("bytes"), build_serde("avro", schema=V1),
              build_serde("avro", schema=V1, reader_schema=V2),
              registry_serde(server), registry_serde(server, schema=V1, subject="s")]
    assert {s.name for s in serdes} == set(FORMATS)
    for serde in serdes:
        assert serde.encode(None) is None
        assert serde.decode(None) is None
    assert server.requests == []  # a tombstone needs no schema


# --- build-time errors ------------------------------------------------------------------------

@pytest.mark.parametrize(("fmt", "options", "message"), [
    ("xml", {}, "unknown format 'xml' (known: json, string, bytes, avro, avro_registry)"),
    ("avro", {}, "format 'avro' needs a schema (an .avsc file)"),
    ("avro_registry", {}, "format 'avro_registry' needs a schema registry (its URL)"),
    ("string", {"schema": V1}, "format 'string' does not take schema"),
    ("json", {"schema": ORDER_JSON, "reader_schema": V2}, "format 'json' does not take reader_schema"),
    ("avro", {"schema": V1, "subject": "s"}, "format 'avro' does not take subject"),
])
def test_build_serde_option_errors(fmt, options, message):
    with pytest.raises(SchemaError) as info:
        build_serde(fmt, **options)
    assert str(info.value) == message


def test_avro_registry_encoding_needs_a_subject(server):
    with pytest.raises(SchemaError, match="avro_registry: encoding needs a subject"):
        build_serde("avro_registry", registry=SchemaRegistry(server.url), schema=V1)
    with pytest.raises(SerializationError, match="avro_registry: no schema to encode with"):
        registry_serde(server).encode(ORDER)


def test_serde_for_points_schema_formats_to_build_serde():
    with pytest.raises(SchemaError, match="format 'avro' needs a schema: build it with build_serde"):
        serde_for("avro")


def test_schema_file_errors(tmp_path):
    missing = tmp_path / "missing.avsc"
    with pytest.raises(SchemaError, match=f"cannot read schema file {missing}: No such file"):
        load_avro_schema(missing)
    broken = tmp_path / "broken.avsc"
    broken.write_text('{\n  "type": "record",\n  "name": "X"\n  "fields": []\n}')
    with pytest.raises(SchemaError) as info:
        load_avro_schema(broken)
    assert str(info.value) == (f"schema file {broken}: not valid JSON at line 4, column 3 "
                               "(Expecting ',' delimiter)")
    unknown = tmp_path / "unknown.avsc"
    unknown.write_text('{"type": "record", "name": "X", "fields": [{"name": "a", "type": "nope"}]}')
    with pytest.raises(SchemaError,
                       match=r"schema file .*unknown.avsc: invalid Avro schema: unknown type 'nope'"):
        load_avro_schema(unknown)
    bad_default = tmp_path / "default.avsc"
    bad_default.write_text('{"type": "record", "name": "X", "fields": '
                           '[{"name": "a", "type": "int", "default": "x"}]}')
    with pytest.raises(SchemaError, match="invalid Avro schema: Default value <x> must match"):
        build_serde("avro", schema=bad_default)
    bad_json_schema = tmp_path / "s.json"
    bad_json_schema.write_text('{"type": "thing"}')
    with pytest.raises(SchemaError, match=r"s.json: invalid JSON Schema: Unknown type"):
        load_json_schema(bad_json_schema)
    assert load_json_schema(ORDER_JSON)["title"] == "Order"
    assert isinstance(SchemaError("x"), ValueError)  # reads as a validation error in pydantic


def test_error_hierarchy():
    for cls in (DeserializationError, SerializationError, SchemaError, RegistryError):
        assert issubclass(cls, SerdeError)
    assert issubclass(RegistryUnavailable, DeserializationError)
    assert issubclass(RegistryUnavailableOnEncode, SerializationError)
    assert not DeserializationError("x").transient
    assert RegistryUnavailable("x").transient
    assert RegistryError("x", status=None).transient
    assert RegistryError("x", status=502).transient
    assert RegistryError("x", status=401).transient
    assert not RegistryError("x", status=404).transient
    assert not RegistryError("x", status=422).transient


# --- interoperability with the reference client ---------------------------------------------

def _confluent() -> Any:
    # authlib (imported by the registry client) forces its DeprecationWarning to "always" on import
    with warnings.catch_warnings(record=True):
        try:
            from confluent_kafka.schema_registry import SchemaRegistryClient
            from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
            from confluent_kafka.serialization import MessageField, SerializationContext
        except ImportError as exc:
            pytest.skip(f"confluent_kafka.schema_registry not importable: {exc}")
    return SchemaRegistryClient, AvroSerializer, AvroDeserializer, MessageField, SerializationContext


def test_wire_compatible_with_confluent_kafka_avro_serdes(auth_server):
    client_cls, serializer_cls, deserializer_cls, field, context_cls = _confluent()
    client = client_cls({"url": auth_server.url, "basic.auth.user.info": f"svc:{SECRET}"})
    ctx = context_cls("orders", field.VALUE)
    theirs_out = serializer_cls(client, V1.read_text())
    theirs_in = deserializer_cls(client)
    registry = SchemaRegistry(auth_server.url, username="svc", password=SECRET)
    ours_out = build_serde("avro_registry", registry=registry, schema=V1, subject="orders-value")
    ours_in = build_serde("avro_registry", registry=SchemaRegistry(auth_server.url, username="svc",
                                                                   password=SECRET))

    record = {**ORDER, "note": "from confluent"}
    their_bytes = theirs_out(record, ctx)
    assert ours_in.decode(their_bytes) == record

    our_bytes = ours_out.encode(ORDER)
    assert theirs_in(our_bytes, ctx) == ORDER
    assert our_bytes == theirs_out(ORDER, ctx)  # the same schema gets the same id and bytes
