"""Key and value format names: the spec validates them, serde implements them."""

FORMATS = ("json", "string", "bytes", "avro", "avro_registry")
SCHEMALESS_FORMATS = ("json", "string", "bytes")
"""What `serde_for` and the inline codegen handle; the others need a schema (`build_serde`)."""
SCHEMA_FORMATS = ("avro", "avro_registry")
"""Formats that read with a writer schema (and may take a reader schema)."""
