"""Read a topic's ranges once, for `processor batch`: no group, nothing committed.

A plain consumer is assigned each partition at its range start (never subscribed: there is no
group to join, rebalance or commit to) and reads committed records only. A partition is
finished when its position reaches its end: transaction markers and aborted records take
offsets that are never delivered, so the last offsets before `end` may not arrive as
messages; librdkafka moves the position past them. Records at or past `end` in a fetched
batch are dropped. Progress goes to the log every `progress_every_s`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from processor.runtime.config import WorkerConfig
from processor.runtime.kafka.clients import restore_consumer_config
from processor.runtime.kafka.ranges import Ranges

log = logging.getLogger("processor.batch")


def range_consumer_config(config: WorkerConfig) -> dict[str, Any]:
    """The worker's group-less consumer settings (security included), read committed."""
    return {**restore_consumer_config(config), "isolation.level": "read_committed"}


class RangeReader:
    """Yields `(partition, messages)` of `topic` within `ranges` until every partition is
    finished; messages of one partition come in offset order."""

    def __init__(self, topic: str, ranges: Ranges, consumer_config: dict[str, Any], *,
                 batch_size: int = 10_000, poll_timeout_s: float = 0.2,
                 progress_every_s: float = 10.0) -> None:
        self.topic = topic
        self.ranges = ranges
        self.consumer_config = consumer_config
        self.batch_size = batch_size
        self.poll_timeout_s = poll_timeout_s
        self.progress_every_s = progress_every_s
        self.read: dict[int, int] = {p: 0 for p in ranges}  # records delivered, by partition

    def __iter__(self) -> Iterator[tuple[int, list[Any]]]:
        open_ = {p: r for p, r in self.ranges.items() if not r.empty}
        if not open_:
            return
        consumer = Consumer(self.consumer_config)
        try:
            consumer.assign([TopicPartition(self.topic, p, r.start) for p, r in open_.items()])
            next_log = time.monotonic() + self.progress_every_s
            while open_:
                batches: dict[int, list[Any]] = {}
                for m in consumer.consume(self.batch_size, self.poll_timeout_s):
                    err = m.error()
                    if err is not None:
                        _error(err)
                        continue
                    p = m.partition()
                    r = open_.get(p)
                    if r is not None and m.offset() < r.end:
                        batches.setdefault(p, []).append(m)
                for p, messages in batches.items():
                    self.read[p] += len(messages)
                    yield p, messages
                self._finish(consumer, open_)
                if time.monotonic() >= next_log:
                    next_log = time.monotonic() + self.progress_every_s
                    self._progress(consumer, open_)
            log.info("topic range read", extra={"topic": self.topic, "records": self.read})
        finally:
            consumer.close()

    def _finish(self, consumer: Consumer, open_: Ranges) -> None:
        """Partitions whose position reached their end: paused, no longer open."""
        positions = consumer.position([TopicPartition(self.topic, p) for p in open_])
        done = [tp for tp in positions if tp.offset >= open_[tp.partition].end]
        if done:
            consumer.pause(done)
            for tp in done:
                del open_[tp.partition]

    def _progress(self, consumer: Consumer, open_: Ranges) -> None:
        positions = consumer.position([TopicPartition(self.topic, p) for p in open_])
        log.info("reading topic range", extra={
            "topic": self.topic,
            "partitions": [{"partition": tp.partition, "offset": tp.offset,
                            "end": open_[tp.partition].end} for tp in positions]})


def _error(err: KafkaError) -> None:
    if err.code() == KafkaError._PARTITION_EOF:
        return
    if err.fatal():
        raise KafkaException(err)
    log.warning("consumer error", extra={"error": err.str()})
