"""Produce sample events to a topic (demo and benchmarks)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import orjson
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from processor.runtime.kafka.client_log import CLIENT_LOG


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap, "logger": CLIENT_LOG})
    admin.list_topics(timeout=10)  # an unreachable broker: one KafkaException, not a timeout
    for fut in admin.create_topics([NewTopic(topic, partitions, -1)]).values():
        try:
            fut.result()
        except KafkaException as exc:
            if exc.args[0].code() != 36:  # TOPIC_ALREADY_EXISTS
                raise


def produce_json(bootstrap: str, topic: str, records: Iterable[tuple[Any, ...]], *,
                 rate_per_s: float | None = None, stamp_now: bool = False) -> int:
    """Produce records `(key, json value)` or `(key, json value, partition)`; optional rate
    limit; returns the count."""
    return produce_json_to(bootstrap, ((topic, *rec) for rec in records), rate_per_s=rate_per_s,
                           stamp_now=stamp_now)


def produce_json_to(bootstrap: str, records: Iterable[tuple[Any, ...]], *,
                    rate_per_s: float | None = None, stamp_now: bool = False) -> int:
    """Produce records `(topic, key, json value)` or `(topic, key, json value, partition)`
    through one producer (several input topics in one order); returns the count."""
    producer = Producer({"bootstrap.servers": bootstrap, "logger": CLIENT_LOG, "linger.ms": 5,
                         "partitioner": "murmur2_random", "queue.buffering.max.messages": 500_000,
                         "enable.idempotence": True})  # order kept across retries
    n = 0
    started = time.monotonic()
    for topic, key, value, *partition in records:
        where = {"partition": partition[0]} if partition and partition[0] is not None else {}
        if stamp_now:
            value["ts"] = int(time.time() * 1000)
        data = orjson.dumps(value)
        while True:
            try:
                producer.produce(topic, data, key.encode(), **where)
                break
            except BufferError:
                producer.poll(0.05)
        n += 1
        if rate_per_s and n % 100 == 0:
            ahead = n / rate_per_s - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
            producer.poll(0)
    producer.flush(60)
    return n
