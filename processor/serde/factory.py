"""One entry point that builds a serde for any format from its topology options.

Everything that can be wrong with the options or the schema files fails here, at build time,
as a SchemaError; the serdes it returns fail per record only with Deserialization/SerializationError.
"""

from __future__ import annotations

from os import PathLike

from processor.serde import checked
from processor.serde.avro import avro_registry_serde, avro_serde
from processor.serde.errors import SchemaError
from processor.serde.formats import FORMATS, Serde
from processor.serde.registry import SchemaRegistry

SchemaPath = str | PathLike[str]

_USES = {  # the options each format accepts
    "json": {"schema"},
    "string": set(),
    "bytes": set(),
    "avro": {"schema", "reader_schema"},
    "avro_registry": {"schema", "reader_schema", "subject", "registry"},
}


def build_serde(fmt: str, *, schema: SchemaPath | None = None, reader_schema: SchemaPath | None = None,
                subject: str | None = None, registry: SchemaRegistry | None = None) -> Serde:
    """A serde for `fmt`. `schema`/`reader_schema` are file paths (.avsc, or a JSON Schema for
    json); `subject` and `registry` are for avro_registry (subject only needed to encode)."""
    if fmt not in _USES:
        raise SchemaError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    given = {name for name, value in (("schema", schema), ("reader_schema", reader_schema),
                                      ("subject", subject), ("registry", registry))
             if value is not None}
    extra = sorted(given - _USES[fmt])
    if extra:
        raise SchemaError(f"format {fmt!r} does not take {', '.join(extra)}")
    if fmt == "json":
        return checked.JSON if schema is None else checked.json_schema_serde(schema)
    if fmt == "string":
        return checked.STRING
    if fmt == "bytes":
        return checked.BYTES
    if fmt == "avro":
        if schema is None:
            raise SchemaError("format 'avro' needs a schema (an .avsc file)")
        return avro_serde(schema, reader_schema)
    if registry is None:
        raise SchemaError("format 'avro_registry' needs a schema registry (its URL)")
    return avro_registry_serde(registry, schema=schema, reader_schema=reader_schema, subject=subject)
