"""Serializers for record keys and values.

`serde_for(fmt)` gives the schema-less codecs (json, string, bytes) used by generated hot-path
code; `build_serde(fmt, ...)` builds any format, including Avro with a schema file or a
Confluent Schema Registry, and every serde it returns raises only SerdeErrors.
"""

from processor.serde.errors import (
    DeserializationError,
    RegistryError,
    RegistryUnavailable,
    RegistryUnavailableOnEncode,
    SchemaError,
    SerdeError,
    SerializationError,
)
from processor.serde.factory import build_serde
from processor.serde.formats import FORMATS, SCHEMALESS_FORMATS, Serde, serde_for, state_key_serde
from processor.serde.registry import SchemaRegistry
from processor.serde.schemas import load_avro_schema, load_json_schema

__all__ = [
    "FORMATS",
    "SCHEMALESS_FORMATS",
    "DeserializationError",
    "RegistryError",
    "RegistryUnavailable",
    "RegistryUnavailableOnEncode",
    "SchemaError",
    "SchemaRegistry",
    "Serde",
    "SerdeError",
    "SerializationError",
    "build_serde",
    "load_avro_schema",
    "load_json_schema",
    "serde_for",
    "state_key_serde",
]
