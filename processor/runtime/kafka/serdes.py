"""The codecs of a topology's topic ends, built once per worker with its schema registry."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from processor.errors import ProcessorError
from processor.graph import TopicEnd
from processor.serde import SchemaRegistry, Serde, build_serde, serde_for


class Serdes:
    """`serdes(end, is_key)`: the Serde of one side of a topic end. Schema formats are built
    once per (topic, side) and share one registry client, so schemas are fetched once."""

    def __init__(self, connect: Callable[[], SchemaRegistry | None] | None = None) -> None:
        """`connect` makes the registry client (WorkerConfig.schema_registry), once the first
        avro_registry end asks for it; it gives None when no registry is configured."""
        self._connect = connect
        self._registry: SchemaRegistry | None = None
        self._built: dict[tuple[str, bool, Any], Serde] = {}

    def registry(self) -> SchemaRegistry:
        if self._registry is None and self._connect is not None:
            self._registry = self._connect()
        if self._registry is None:
            raise ProcessorError("the topology uses format avro_registry but schema_registry_url "
                                 "is not set (config file or PROCESSOR_SCHEMA_REGISTRY_URL)")
        return self._registry

    def __call__(self, end: TopicEnd, is_key: bool) -> Serde:
        spec = end.key_serde if is_key else end.value_serde
        if spec is None:
            return serde_for(end.key_format if is_key else end.value_format)
        cache_key = (end.topic, is_key, spec)
        serde = self._built.get(cache_key)
        if serde is None:
            registry = spec.format == "avro_registry"
            side = "key" if is_key else "value"
            serde = self._built[cache_key] = build_serde(
                spec.format,
                schema=Path(spec.schema_file) if spec.schema_file else None,
                reader_schema=Path(spec.reader_schema) if spec.reader_schema else None,
                subject=(spec.subject or f"{end.topic}-{side}") if registry else None,
                registry=self.registry() if registry else None)
        return serde
