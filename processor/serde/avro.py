"""Avro codecs: schemaless binary with a schema file (`avro`), and the Confluent Schema Registry
wire format (`avro_registry`: magic byte 0, 4-byte big-endian schema id, schemaless Avro).

Decoding runs per record, so everything that can be done once is done at build time (parsed
schemas, the framing struct, bound functions); the per-record cost is one BytesIO and fastavro's
C reader. fastavro's writer silently coerces some wrong values (1.5 written as int 1, True as 1,
an int past 32 bits into an `int` field), so encode validates first (avro_check.py makes that
cheap): a value that does not fit the schema raises instead of writing bytes that decode to
something else.
Extra keys in a record are ignored, as the reference serializers do.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Callable
from os import PathLike
from typing import Any

from fastavro import schemaless_reader, schemaless_writer
from fastavro.validation import ValidationError, validate

from processor.serde.avro_check import fast_check
from processor.serde.errors import (
    DeserializationError,
    RegistryError,
    RegistryUnavailable,
    RegistryUnavailableOnEncode,
    SchemaError,
    SerializationError,
)
from processor.serde.formats import Serde
from processor.serde.registry import SchemaRegistry
from processor.serde.schemas import AvroSchema, load_avro_schema, parse_avro_schema, read_json_file

_FRAME = struct.Struct(">BI")
MAGIC = 0


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(schema: Any) -> str:
    """`int`, `record shop.Order`, `array<string>`, `null | string`: for messages."""
    if isinstance(schema, list):
        return " | ".join(_describe(s) for s in schema)
    if isinstance(schema, dict):
        kind = schema.get("type")
        if kind == "array":
            return f"array<{_describe(schema.get('items'))}>"
        if kind == "map":
            return f"map<{_describe(schema.get('values'))}>"
        if "name" in schema:
            return f"{kind} {schema['name']}"
        return _describe(kind)
    return str(schema)


def _invalid(fmt: str, exc: ValidationError, label: str) -> SerializationError:
    """One line for the first failing field; a union's per-branch errors become `a | b`."""
    first = exc.errors[0]
    expected = [_describe(e.schema) for e in exc.errors if e.field == first.field]
    where = f"field {first.field}" if first.field else "value"
    return SerializationError(f"{fmt}: {where} is {type(first.datum).__name__} {_short(first.datum)}"
                              f", expected {' | '.join(expected)} ({label})")


def _decode_failure(fmt: str, exc: Exception, pos: int, size: int, label: str) -> DeserializationError:
    if isinstance(exc, EOFError):
        return DeserializationError(f"{fmt}: truncated data at byte {pos} of {size} ({label})")
    if isinstance(exc, UnicodeDecodeError):
        return DeserializationError(f"{fmt}: invalid UTF-8 in a string ending at byte {pos} ({label})")
    if type(exc).__name__ == "SchemaResolutionError":
        return DeserializationError(f"{fmt}: writer schema cannot be read with the reader schema: "
                                    f"{exc} ({label})")
    return DeserializationError(f"{fmt}: invalid data at byte {pos} ({type(exc).__name__}: "
                                f"{str(exc)[:80]}) ({label})")


def _reader(fmt: str) -> Callable[[io.BytesIO, int, AvroSchema, AvroSchema | None, str], Any]:
    """Read one record from `fo` (positioned after any header); all of the data must be used."""
    def read(fo: io.BytesIO, size: int, writer: AvroSchema, reader: AvroSchema | None,
             label: str) -> Any:
        try:
            value = schemaless_reader(fo, writer, reader)
        except Exception as exc:  # fastavro raises EOFError, IndexError, ValueError, ... on bad data
            raise _decode_failure(fmt, exc, fo.tell(), size, label) from None
        if fo.tell() != size:
            raise DeserializationError(f"{fmt}: {size - fo.tell()} bytes left after the record at "
                                       f"byte {fo.tell()} of {size} (wrong schema?) ({label})")
        return value
    return read


def _writer(fmt: str, schema: AvroSchema, label: str) -> Callable[[io.BytesIO, Any], bytes]:
    fits = fast_check(schema)

    def write(fo: io.BytesIO, value: Any) -> bytes:
        try:
            if not fits(value):  # only unusual or wrong values pay for fastavro's validate
                validate(value, schema, raise_errors=True)
            schemaless_writer(fo, schema, value)
        except ValidationError as exc:
            raise _invalid(fmt, exc, label) from None
        except Exception as exc:  # anything validate let through (e.g. a value that is not a dict)
            raise SerializationError(f"{fmt}: cannot encode {type(value).__name__}: "
                                     f"{str(exc)[:80]} ({label})") from None
        return fo.getvalue()
    return write


def _label(path: str | PathLike[str]) -> str:
    return f"schema {os.fspath(path)}"


def avro_serde(schema: str | PathLike[str], reader_schema: str | PathLike[str] | None = None) -> Serde:
    """Schemaless Avro written with `schema`; read as `reader_schema` when given (evolution)."""
    writer = load_avro_schema(schema)
    reader = load_avro_schema(reader_schema) if reader_schema is not None else None
    label = _label(schema) + (f" read as {os.fspath(reader_schema)}" if reader_schema is not None else "")
    read, write = _reader("avro"), _writer("avro", writer, _label(schema))
    BytesIO = io.BytesIO

    def decode(data: bytes | None) -> Any:
        if data is None:
            return None
        return read(BytesIO(data), len(data), writer, reader, label)

    def encode(value: Any) -> bytes | None:
        return None if value is None else write(BytesIO(), value)

    return Serde("avro", encode, decode)


def avro_registry_serde(registry: SchemaRegistry, *, schema: str | PathLike[str] | None = None,
                        reader_schema: str | PathLike[str] | None = None,
                        subject: str | None = None) -> Serde:
    """Confluent wire format. Decode looks the writer schema up by id (once per id); encode, if
    `schema` is given, registers it under `subject` on first use and frames records with its id."""
    if schema is not None and not subject:
        raise SchemaError("avro_registry: encoding needs a subject to register the schema under")
    reader = load_avro_schema(reader_schema) if reader_schema is not None else None
    writers: dict[int, AvroSchema] = {}
    read = _reader("avro_registry")
    unpack, BytesIO = _FRAME.unpack_from, io.BytesIO

    def writer_for(schema_id: int) -> AvroSchema:
        try:
            parsed = registry.schema_by_id(schema_id)
        except RegistryError as exc:
            if exc.transient:
                raise RegistryUnavailable(f"avro_registry: cannot fetch schema id {schema_id}: "
                                          f"{exc}") from None
            if exc.status == 404:
                raise DeserializationError(f"avro_registry: unknown schema id {schema_id} "
                                           f"(registry {registry.url}: HTTP 404)") from None
            raise DeserializationError(f"avro_registry: cannot use schema id {schema_id}: "
                                       f"{exc}") from None
        except SchemaError as exc:
            raise DeserializationError(f"avro_registry: {exc}") from None
        writers[schema_id] = parsed
        return parsed

    def decode(data: bytes | None) -> Any:
        if data is None:
            return None
        size = len(data)
        if size < 5:
            raise DeserializationError(f"avro_registry: {size} bytes is too short for the "
                                       "5-byte header (magic byte, schema id)")
        magic, schema_id = unpack(data)
        if magic != MAGIC:
            raise DeserializationError(f"avro_registry: bad magic byte 0x{magic:02x} (expected "
                                       "0x00: not Confluent wire format)")
        writer = writers.get(schema_id) or writer_for(schema_id)
        fo = BytesIO(data)
        fo.seek(5)
        return read(fo, size, writer, reader, f"schema id {schema_id}")

    if schema is None:
        def encode(value: Any) -> bytes | None:
            if value is None:
                return None
            raise SerializationError("avro_registry: no schema to encode with (set `schema`)")
        return Serde("avro_registry", encode, decode)

    document = read_json_file(schema)  # registered as written, not as fastavro rewrites it
    own = parse_avro_schema(document, f"schema file {os.fspath(schema)}")
    label = _label(schema)
    write = _writer("avro_registry", own, label)
    header: list[bytes] = []  # filled once the schema is registered

    def register() -> bytes:
        try:
            schema_id = registry.register(subject or "", document)
        except RegistryError as exc:
            cls = RegistryUnavailableOnEncode if exc.transient else SerializationError
            raise cls(f"avro_registry: cannot register {label} under subject {subject!r}: "
                      f"{exc}") from None
        writers.setdefault(schema_id, own)
        header.append(_FRAME.pack(MAGIC, schema_id))
        return header[0]

    def encode(value: Any) -> bytes | None:
        if value is None:
            return None
        fo = BytesIO()
        fo.write(header[0] if header else register())
        return write(fo, value)

    return Serde("avro_registry", encode, decode)

