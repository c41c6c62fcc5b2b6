"""The topics a topology reads and writes: sources, sinks, their formats, event time, dead letters."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from processor.spec.base import DurationMs, OnError, Strict
from processor.spec.bounded import BackfillSpec, BoundedSpec, FileSinkSpec, FileSourceSpec
from processor.spec.formats import FORMATS, SCHEMA_FORMATS


class SerdeSpec(Strict):
    """A key or value format. `schema` is a file next to the topology: an Avro schema (.avsc)
    for `avro` / `avro_registry`, a JSON Schema for `json` (values are validated)."""

    format: str = "json"
    schema_file: str | None = Field(default=None, alias="schema")
    reader_schema: str | None = None
    subject: str | None = None

    @field_validator("format")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in FORMATS:
            raise ValueError(f"unknown format {v!r} (known: {', '.join(FORMATS)})")
        return v

    @model_validator(mode="after")
    def _fits_format(self) -> SerdeSpec:
        fmt = self.format
        if fmt == "avro" and self.schema_file is None:
            raise ValueError("format avro needs `schema: <file.avsc>` (the writer schema)")
        if self.schema_file is not None and fmt in ("string", "bytes"):
            raise ValueError(f"format {fmt} takes no schema (schemas: json, avro, avro_registry)")
        if self.reader_schema is not None and fmt not in SCHEMA_FORMATS:
            raise ValueError("reader_schema is for avro and avro_registry only")
        if self.subject is not None and fmt != "avro_registry":
            raise ValueError("subject is for avro_registry only")
        return self


class TimestampSpec(Strict):
    """Event time from a value field; absent = the Kafka record timestamp.

    unit: `ms` / `s` = epoch number (milliseconds / seconds, fractions allowed),
    `iso` = ISO-8601 string (a time without offset is UTC)."""

    field: str
    unit: Literal["ms", "s", "iso"] = "ms"


class WatermarkSpec(Strict):
    """Per source partition: watermark = max event time seen - max_out_of_orderness.
    A partition without input for `idle_timeout` stops holding back downstream watermarks."""

    max_out_of_orderness: DurationMs = 0
    idle_timeout: DurationMs | None = None

    @field_validator("idle_timeout")
    @classmethod
    def _positive(cls, v: int | None) -> int | None:
        if v is not None and v <= 0:
            raise ValueError("idle_timeout must be positive (omit it to never mark a partition idle)")
        return v


SourceKind = Literal["stream", "table", "global_table", "broadcast"]
"""stream: records to process. table: the latest value per key of a (compacted) topic, held per
task (partition p of the table next to partition p of the stream joining it). global_table: the
whole topic on every worker. broadcast: the whole topic in memory on every worker, readable by
expressions as `broadcast['<name>']` and by process functions as `ctx.broadcast['<name>']`."""


class SourceSpec(Strict):
    """`topic`: where the records are (for a `file` source without one: the source's name,
    the topic it would be live on). `file`, `bounded`, `backfill`: bounded inputs (bounded.py)."""

    topic: str
    kind: SourceKind = "stream"
    file: FileSourceSpec | None = None
    bounded: BoundedSpec | None = None
    backfill: BackfillSpec | None = None
    partitions: int | None = Field(
        default=None, ge=1,
        description="the topic's partition count, if known: validate checks co-partitioning with "
                    "it; a worker with create_source_topics creates the topic with it when "
                    "missing; an existing topic keeps its own (the worker warns if it differs)")
    key: SerdeSpec = SerdeSpec(format="string")
    value: SerdeSpec = SerdeSpec(format="json")
    timestamp: TimestampSpec | None = None
    watermark: WatermarkSpec = WatermarkSpec()
    on_error: OnError | None = None  # records that fail to decode; default: the topology's

    @model_validator(mode="after")
    def _one_input(self) -> SourceSpec:
        given = [n for n in ("file", "bounded", "backfill") if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(f"{' and '.join(given)} exclude each other (one input per source)")
        if given and self.kind != "stream":
            raise ValueError(f"{given[0]} is for stream sources (this one is a {self.kind})")
        return self


class SinkSpec(Strict):
    """`topic`, or `file` for a batch output (then `topic` defaults to the sink's name)."""

    topic: str
    file: FileSinkSpec | None = None
    key: SerdeSpec = SerdeSpec(format="string")
    value: SerdeSpec = SerdeSpec(format="json")
    partitions: int | None = Field(
        default=None, ge=1, description="create the topic with this many partitions if missing"
    )


class DeadLetterSpec(Strict):
    """Where failed records go under `on_error: dlq` (default topic `<name>-dlq`)."""

    topic: str | None = None
    partitions: int = Field(default=1, ge=1)
