"""`processor consume TOPIC`: print a topic's committed records, pretty or as JSON lines.

It reads read_committed (what a downstream consumer of an exactly-once topology sees: no
aborted or still-open transaction), from the beginning or from the end, without a consumer
group (nothing is committed, no group appears on the broker). `--json` prints the envelope
`processor produce --envelope` reads back.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaException, TopicPartition

from processor.runtime.config import WorkerConfig
from processor.runtime.kafka.clients import restore_consumer_config
from processor.tools.topics_cli import broker_error, existing_topic


def _decoded(data: bytes | None) -> Any:
    """JSON when the bytes are JSON, else the text, else the hex with a marker."""
    if data is None:
        return None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"bytes_hex": data.hex()}


def _key(data: bytes | None) -> Any:
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"bytes_hex": data.hex()}


def envelope(m: Any) -> dict[str, Any]:
    _kind, ts = m.timestamp()
    return {"topic": m.topic(), "partition": m.partition(), "offset": m.offset(),
            "timestamp": ts if ts >= 0 else None, "key": _key(m.key()),
            "value": _decoded(m.value()),
            "headers": {k: (v or b"").decode("utf-8", "replace") for k, v in (m.headers() or [])}}


def _pretty(doc: dict[str, Any]) -> str:
    ts = doc["timestamp"]
    at = (datetime.fromtimestamp(ts / 1000, UTC).isoformat(timespec="milliseconds")
          if ts is not None else "-")
    value = orjson.dumps(doc["value"]).decode()
    head = f"{doc['topic']}[{doc['partition']}]@{doc['offset']}  {at}  key={doc['key']!r}"
    headers = f"  headers={doc['headers']}" if doc["headers"] else ""
    return f"{head}{headers}\n  {value}"


def consume(config: WorkerConfig, topic: str, *, from_beginning: bool = False,
            count: int | None = None, timeout_s: float | None = None, as_json: bool = False,
            out: TextIO = sys.stdout) -> int:
    """Print records until `count` are shown or none came for `timeout_s`; returns how many."""
    conf = restore_consumer_config(config)
    conf.update({"isolation.level": "read_committed", "enable.partition.eof": False})
    consumer = Consumer(conf)
    try:
        meta = existing_topic(consumer, config, topic)
        start = OFFSET_BEGINNING if from_beginning else OFFSET_END
        consumer.assign([TopicPartition(topic, p, start) for p in sorted(meta.partitions)])
        shown = 0
        last = time.monotonic()
        while count is None or shown < count:
            msgs = consumer.consume(min(500, count - shown) if count else 500, 0.2)
            if not msgs:
                if timeout_s is not None and time.monotonic() - last >= timeout_s:
                    break
                continue
            last = time.monotonic()
            for m in msgs:
                if m.error() is not None:
                    raise broker_error(KafkaException(m.error()), config, f"reading {topic}")
                doc = envelope(m)
                print(orjson.dumps(doc).decode() if as_json else _pretty(doc), file=out,
                      flush=True)
                shown += 1
    finally:
        consumer.close()
    return shown
