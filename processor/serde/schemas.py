"""Schema files: read, parse and check them once, at build time, with messages that stand alone.

The topology validator prefixes these messages with `file:line: field:`, so each one names the
schema file and says what is wrong with it, never where in the YAML it was referenced.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from os import PathLike
from typing import Any

import fastavro
import fastjsonschema

from processor.serde.errors import SchemaError

AvroSchema = dict[str, Any] | list[Any] | str
"""A schema as `fastavro.parse_schema` returns it (named types resolved, ready for the codecs)."""


def read_json_file(path: str | PathLike[str]) -> Any:
    """The JSON document in a schema file."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise SchemaError(f"cannot read schema file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise SchemaError(f"schema file {path}: not UTF-8 text (byte {exc.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SchemaError(f"schema file {path}: not valid JSON at line {exc.lineno}, "
                          f"column {exc.colno} ({exc.msg})") from None


def parse_avro_schema(schema: Any, source: str,
                      named_schemas: dict[str, Any] | None = None) -> AvroSchema:
    """Parse an Avro schema given as JSON data; `source` names it in the error message.
    `named_schemas` holds named types defined elsewhere (registry references) and gets this
    schema's own."""
    try:
        return fastavro.parse_schema(schema, named_schemas=named_schemas)
    except Exception as exc:  # fastavro raises SchemaParseException, UnknownType, TypeError, ...
        detail = str(exc) or type(exc).__name__
        if type(exc).__name__ == "UnknownType":
            detail = f"unknown type {detail!r}"
        raise SchemaError(f"{source}: invalid Avro schema: {detail}") from None


def load_avro_schema(path: str | PathLike[str]) -> AvroSchema:
    """Read and parse an .avsc file."""
    return parse_avro_schema(read_json_file(path), f"schema file {path}")


def compile_json_schema(schema: Any, source: str) -> Callable[[Any], Any]:
    """Compile a JSON Schema into a validator function (raises JsonSchemaValueException).

    Defaults are not filled in: validation is a check, and on encode filling them would mutate
    the caller's value in place."""
    if not isinstance(schema, dict | bool):
        raise SchemaError(f"{source}: invalid JSON Schema: the top level must be an object, "
                          f"got {type(schema).__name__}")
    try:
        return fastjsonschema.compile(schema, use_default=False)
    except Exception as exc:  # JsonSchemaDefinitionException, re.error for bad patterns, ...
        raise SchemaError(f"{source}: invalid JSON Schema: {exc}") from None


def load_json_schema(path: str | PathLike[str]) -> dict[str, Any] | bool:
    """Read a JSON Schema file and check that it compiles; returns the schema document."""
    schema = read_json_file(path)
    compile_json_schema(schema, f"schema file {path}")
    return schema
