"""`processor produce TOPIC`: JSON lines in, records on a topic out.

Each input line is one JSON value. By default the whole line is the record's value (JSON
bytes, what a `format: json` source reads) and the key is taken from `--key-field` (its text)
or left empty. With `--envelope` each line is `{"key": ..., "value": ..., "timestamp": ...,
"headers": {...}}`, the shape `processor consume --json` prints, so a topic's records can be
copied, edited and put back. Keys are partitioned like Java producers (murmur2).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TextIO

import orjson
from confluent_kafka import Producer

from processor.errors import ProcessorError
from processor.runtime.config import WorkerConfig
from processor.runtime.kafka.clients import producer_config
from processor.runtime.kafka.produce import produce_when_room
from processor.tools.topics_cli import existing_topic

FLUSH_TIMEOUT_S = 30.0


@dataclass
class Record:
    key: bytes | None
    value: bytes | None
    timestamp: int | None = None
    headers: list[tuple[str, bytes]] | None = None


def _text(v: Any) -> bytes | None:
    if v is None:
        return None
    return (v if isinstance(v, str) else orjson.dumps(v).decode()).encode()


def parse_line(line: str, where: str, *, key_field: str | None, envelope: bool) -> Record:
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ProcessorError(f"{where}: not a JSON value ({exc}); each line must be one JSON "
                             "document") from None
    if not envelope:
        key = doc.get(key_field) if key_field and isinstance(doc, dict) else None
        if key_field and key is None:
            raise ProcessorError(f"{where}: no field {key_field!r} for the key (--key-field)")
        return Record(_text(key), orjson.dumps(doc))
    if not isinstance(doc, dict) or "value" not in doc:
        raise ProcessorError(f"{where}: --envelope expects an object with \"value\" (and "
                             "optionally \"key\", \"timestamp\" in ms, \"headers\")")
    ts = doc.get("timestamp")
    if ts is not None and not isinstance(ts, int):
        raise ProcessorError(f"{where}: \"timestamp\" must be epoch milliseconds, got {ts!r}")
    headers = doc.get("headers") or {}
    if not isinstance(headers, dict):
        raise ProcessorError(f"{where}: \"headers\" must be an object of strings")
    value = doc["value"]
    return Record(_text(doc.get("key")), None if value is None else orjson.dumps(value), ts,
                  [(k, _text(v) or b"") for k, v in headers.items()])


def read_records(lines: Iterable[str], source: str, *, key_field: str | None,
                 envelope: bool) -> Iterable[Record]:
    for n, line in enumerate(lines, 1):
        if line.strip():
            yield parse_line(line, f"{source}:{n}", key_field=key_field, envelope=envelope)


def produce(config: WorkerConfig, topic: str, lines: Iterable[str], source: str, *,
            key_field: str | None = None, envelope: bool = False, rate: float | None = None,
            out: TextIO = sys.stderr) -> int:
    """Write every line's record to `topic` (at most `rate` a second, rate > 0, None: no
    limit); returns how many."""
    producer = Producer(producer_config(config, None))
    existing_topic(producer, config, topic)
    failed: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            failed.append(err.str())

    started = time.monotonic()
    sent = 0
    for rec in read_records(lines, source, key_field=key_field, envelope=envelope):
        if rate is not None:
            ahead = started + sent / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        kwargs: dict[str, Any] = {"on_delivery": delivered}
        if rec.timestamp is not None:
            kwargs["timestamp"] = rec.timestamp
        if rec.headers:
            kwargs["headers"] = rec.headers
        produce_when_room(producer, topic, rec.value, rec.key, **kwargs)
        producer.poll(0)  # delivery reports (and librdkafka's summarised log lines)
        sent += 1
    if producer.flush(FLUSH_TIMEOUT_S) > 0:
        raise ProcessorError(f"{topic}: records still undelivered after {FLUSH_TIMEOUT_S:.0f}s "
                             f"(broker {config.bootstrap_servers} stopped answering?)")
    if failed:
        raise ProcessorError(f"{topic}: {len(failed)} of {sent} records failed: {failed[0]}")
    print(f"produced {sent} record{'s' if sent != 1 else ''} to {topic}", file=out)
    return sent
