"""A consumer batch grouped by partition: the first step of everything that reads Kafka in a
loop (the worker's dispatch, the restorer, the table follower), which hand each partition's
records to one owner (a task, a store being restored, a table registration).

Messages carrying an error (partition EOF included) are not records: each goes to the
caller's `on_error`, since what an end of partition or a failed fetch means differs per reader.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import KafkaError, KafkaException

log = logging.getLogger("processor.worker")

TopicPartitionKey = tuple[str, int]


def by_partition(msgs: Iterable[Any], on_error: Callable[[Any, KafkaError], None],
                 ) -> dict[TopicPartitionKey, list[Any]]:
    """`(topic, partition)` -> its records in consumed order; errors go to `on_error(m, err)`
    in consumed order (it may raise)."""
    grouped: dict[TopicPartitionKey, list[Any]] = {}
    for m in msgs:
        err = m.error()
        if err is not None:
            on_error(m, err)
            continue
        tp = (m.topic(), m.partition())
        records = grouped.get(tp)
        if records is None:
            grouped[tp] = records = []
        records.append(m)
    return grouped


def consumer_error(m: Any, err: KafkaError) -> None:
    """The worker's `on_error`: end of partition is routine, a fatal error stops the worker,
    anything else is logged (librdkafka retries it)."""
    if err.code() == KafkaError._PARTITION_EOF:
        return
    if err.fatal():
        raise KafkaException(err)
    log.warning("consumer error", extra={"error": err.str()})
