"""Producing under back-pressure, shared by the sink emitters and the changelog writer."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from confluent_kafka import Producer


def produce_when_room(producer: Producer, topic: str, value: bytes | None, key: bytes | None,
                      **kwargs: Any) -> None:
    """Produce, serving delivery reports until librdkafka's local queue has room.

    Hot paths call `producer.produce` directly and come here only on BufferError, so the
    common case pays nothing for the retry loop.
    """
    while True:
        try:
            producer.produce(topic, value, key, **kwargs)
            return
        except BufferError:
            producer.poll(0.05)


def produce_all(producer: Producer, topic: str, records: Iterable[tuple[bytes, bytes | None]],
                partition: int) -> None:
    """Produce `(key, value)` records to one partition with the producer's default delivery
    report: the loop of a checkpoint's changelog writes, a produce per record."""
    produce = producer.produce
    for key, value in records:
        try:
            produce(topic, value, key, partition=partition)
        except BufferError:
            produce_when_room(producer, topic, value, key, partition=partition)
