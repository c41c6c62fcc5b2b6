"""The record that says a backfill's outputs were committed: `<application>-backfill`.

A compacted one-partition topic. The backfill produces its marker (key: the backfill's
identity) in the same transaction as its outputs, so the marker is there exactly when the
outputs are: a rerun that finds it must not write them again, only finish the hand-over to
the live application. `processor reset` leaves this topic alone (it is not one of the
application's internal topics): the outputs stay committed whatever happens to the state.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from processor.errors import ProcessorError
from processor.runtime.config import WorkerConfig
from processor.tools.savepoint import read_partitions, reader

TIMEOUT_S = 30.0


def marker_topic(application: str) -> str:
    return f"{application}-backfill"


def ensure_marker_topic(admin: AdminClient, config: WorkerConfig, application: str) -> str:
    """Create the marker topic when missing; returns its name."""
    topic = marker_topic(application)
    new = NewTopic(topic, 1, config.replication_factor,
                   config={"cleanup.policy": "compact", "min.compaction.lag.ms": "0"})
    for fut in admin.create_topics([new], request_timeout=TIMEOUT_S).values():
        try:
            fut.result()
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise ProcessorError(f"cannot create the backfill marker topic {topic!r}: "
                                     f"{exc.args[0].str()}") from None
    _await_leader(admin, topic)
    return topic


def _await_leader(admin: AdminClient, topic: str) -> None:
    """A topic just created has no partition leader for a moment: reading it then fails."""
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        part = admin.list_topics(topic, timeout=TIMEOUT_S).topics[topic].partitions.get(0)
        if part is not None and part.leader >= 0 and part.error is None:
            return
        if time.monotonic() > deadline:
            raise ProcessorError(f"the backfill marker topic {topic!r} has no leader after "
                                 f"{TIMEOUT_S:.0f}s")
        time.sleep(0.2)


def read_markers(config: WorkerConfig, application: str) -> dict[str, dict[str, Any]]:
    """The committed markers by identity (the latest per key; none when the topic is empty)."""
    consumer = reader(config)
    markers: dict[str, dict[str, Any]] = {}
    try:
        for m in read_partitions(consumer, {(marker_topic(application), 0): 0}):
            if m.key() is not None and m.value() is not None:
                markers[m.key().decode()] = orjson.loads(m.value())
    finally:
        consumer.close()
    return markers


def produce_marker(producer: Producer, application: str, identity: str,
                   marker: dict[str, Any]) -> None:
    """Add the marker to `producer`'s open transaction (the outputs' one)."""
    producer.produce(marker_topic(application), orjson.dumps(marker), identity.encode())
