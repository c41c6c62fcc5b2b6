"""Dead letters: records that failed, written with headers saying why and where they came from.

A dead letter keeps the failing input record's key, value and headers byte for byte, so
`processor dlq replay` can put it back where it came from once the cause is fixed. When the
failing record is not one input record but a result derived from many (a window or an
aggregate result, a timer's output), there are no such bytes: its key and value are written
as JSON instead and `processor.payload` says `derived` (replay leaves those alone).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import KafkaError, KafkaException, Producer

from processor.runtime.kafka.produce import produce_when_room

PREFIX = "processor."
ERROR_CLASS = "processor.error.class"
ERROR_MESSAGE = "processor.error.message"
ERROR_STEP = "processor.error.step"
ERROR_TIME = "processor.error.time"
TOPOLOGY = "processor.topology"
SOURCE_TOPIC = "processor.source.topic"
SOURCE_PARTITION = "processor.source.partition"
SOURCE_OFFSET = "processor.source.offset"
SOURCE_TIMESTAMP = "processor.source.timestamp"
UPSTREAM_PARTITION = "processor.upstream.partition"  # repartition records: the original input
UPSTREAM_OFFSET = "processor.upstream.offset"
PAYLOAD = "processor.payload"  # source | derived | omitted
REPLAYED_FROM = "processor.replayed.from"  # set by `dlq replay` on the re-injected record
REPLAY_STEP = "processor.replay.step"  # ...with the step that failed: the task routes it there

MAX_MESSAGE_CHARS = 2000


@dataclass
class DeadLetter:
    """One failed record and the coordinates of the input record it came from."""

    step: str
    cause: BaseException
    topic: str
    partition: int
    offset: int
    timestamp: int | None
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)  # the original record's
    payload: str = "source"
    upstream: tuple[int, int] | None = None

    @property
    def error_class(self) -> str:
        return type(self.cause).__name__

    def kafka_headers(self, topology: str, now_ms: int) -> list[tuple[str, bytes]]:
        ours = [
            (ERROR_CLASS, self.error_class.encode()),
            (ERROR_MESSAGE, str(self.cause)[:MAX_MESSAGE_CHARS].encode("utf-8", "replace")),
            (ERROR_STEP, self.step.encode()),
            (ERROR_TIME, str(now_ms).encode()),
            (TOPOLOGY, topology.encode()),
            (SOURCE_TOPIC, self.topic.encode()),
            (SOURCE_PARTITION, str(self.partition).encode()),
            (SOURCE_OFFSET, str(self.offset).encode()),
            (PAYLOAD, self.payload.encode()),
        ]
        if self.timestamp is not None:
            ours.append((SOURCE_TIMESTAMP, str(self.timestamp).encode()))
        if self.upstream is not None:
            ours += [(UPSTREAM_PARTITION, str(self.upstream[0]).encode()),
                     (UPSTREAM_OFFSET, str(self.upstream[1]).encode())]
        # a replayed record that failed again: ours say it now; where it was replayed from stays
        return [(k, v) for k, v in self.headers
                if not k.startswith(PREFIX) or k == REPLAYED_FROM] + ours


def derived_bytes(obj: Any) -> bytes | None:
    """Best-effort JSON of a derived key or value (anything not JSON-native as its str)."""
    if obj is None:
        return None
    if isinstance(obj, bytes):
        return obj
    try:
        return orjson.dumps(obj, default=str, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return repr(obj).encode("utf-8", "replace")


class DeadLetterWriter:
    """Produces dead letters through the worker's producer: under exactly-once they are part
    of the same transaction as the outputs and offsets of the batch they were found in."""

    def __init__(self, producer: Callable[[], Producer], topic: str, topology: str) -> None:
        self._producer = producer
        self.topic = topic
        self.topology = topology
        self.written = 0

    def __call__(self, letter: DeadLetter) -> None:
        headers = letter.kafka_headers(self.topology, int(time.time() * 1000))
        ts = letter.timestamp if letter.timestamp and letter.timestamp > 0 else None
        try:
            produce_when_room(self._producer(), self.topic, letter.value, letter.key,
                              headers=headers, **({"timestamp": ts} if ts else {}))
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.MSG_SIZE_TOO_LARGE:
                raise
            # cannot happen for a record read from Kafka unless the DLQ's limit is lower:
            # keep the coordinates (the record is still in its source topic) and say so
            headers = [(k, v) for k, v in headers if k != PAYLOAD] + [(PAYLOAD, b"omitted")]
            produce_when_room(self._producer(), self.topic, None, letter.key, headers=headers)
        self.written += 1


def header_map(headers: list[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """The processor.* headers of a dead letter as text."""
    return {k: (v or b"").decode("utf-8", "replace") for k, v in headers or [] if k.startswith(PREFIX)}
