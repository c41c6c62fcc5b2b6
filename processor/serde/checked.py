"""json, string and bytes with errors mapped to DeserializationError / SerializationError, and
json optionally validated against a JSON Schema (compiled once by fastjsonschema).

`serde_for` keeps the raw codecs (and their raw exceptions) for the generated hot-path code; these
are what `build_serde` hands out, so every serde it builds fails only with SerdeErrors.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from os import PathLike
from typing import Any

import orjson
from fastjsonschema import JsonSchemaValueException

from processor.serde.errors import DeserializationError, SerializationError
from processor.serde.formats import Serde, _bytes_encode, _string_encode
from processor.serde.schemas import compile_json_schema, read_json_file

_OPT = orjson.OPT_NON_STR_KEYS


def _json_decode(data: bytes | None) -> Any:
    if data is None:
        return None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DeserializationError(f"json: invalid JSON at position {exc.pos} ({exc.msg})") from None


def _json_encode(value: Any) -> bytes | None:
    if value is None:
        return None
    try:
        return orjson.dumps(value, None, _OPT)
    except orjson.JSONEncodeError as exc:
        raise SerializationError(f"json: cannot encode {type(value).__name__}: {exc}") from None


def _violation(exc: JsonSchemaValueException, label: str) -> str:
    """fastjsonschema names the value `data`: 'data.items[0].sku must be string'."""
    message = exc.message
    if message.startswith("data"):
        message = "value" + message[4:]
    return f"json schema: {message} ({label})"


def json_schema_serde(schema: str | PathLike[str]) -> Serde:
    """JSON whose values must match the JSON Schema in file `schema`, on decode and on encode."""
    path = os.fspath(schema)
    label = f"schema {path}"
    check: Callable[[Any], Any] = compile_json_schema(read_json_file(path), f"schema file {path}")
    loads, dumps = orjson.loads, orjson.dumps

    def decode(data: bytes | None) -> Any:
        if data is None:
            return None
        try:
            value = loads(data)
        except orjson.JSONDecodeError as exc:
            raise DeserializationError(f"json: invalid JSON at position {exc.pos} ({exc.msg})") from None
        try:
            check(value)
        except JsonSchemaValueException as exc:
            raise DeserializationError(_violation(exc, label)) from None
        return value

    def encode(value: Any) -> bytes | None:
        if value is None:
            return None
        try:
            check(value)
        except JsonSchemaValueException as exc:
            raise SerializationError(_violation(exc, label)) from None
        try:
            return dumps(value, None, _OPT)
        except orjson.JSONEncodeError as exc:
            raise SerializationError(f"json: cannot encode {type(value).__name__}: {exc}") from None

    return Serde("json", encode, decode)


def _string_decode(data: bytes | None) -> str | None:
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DeserializationError(f"string: invalid UTF-8 at byte {exc.start}") from None


def _string_encode_checked(value: Any) -> bytes | None:
    try:
        return _string_encode(value)
    except Exception as exc:  # a lone surrogate, or a __str__ that raises
        raise SerializationError(f"string: cannot encode {type(value).__name__}: {exc}") from None


def _bytes_decode(data: bytes | None) -> bytes | None:
    return data


def _bytes_encode_checked(value: Any) -> bytes | None:
    try:
        return _bytes_encode(value)
    except TypeError as exc:
        raise SerializationError(f"bytes: {exc}") from None
    except UnicodeEncodeError as exc:
        raise SerializationError(f"bytes: cannot encode str: {exc.reason} at {exc.start}") from None


JSON = Serde("json", _json_encode, _json_decode)
STRING = Serde("string", _string_encode_checked, _string_decode)
BYTES = Serde("bytes", _bytes_encode_checked, _bytes_decode)
