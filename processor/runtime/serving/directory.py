"""Which worker owns which input partition, and the URL of its HTTP port (the state API).

Kafka's group protocol would carry this as member metadata, but librdkafka does not let an
application add user data to it, and DescribeGroups (which would expose a member's client id)
returns no members on the embedded broker. So every worker publishes `{url, assignment, time}`
(and its group member id) to the compacted topic `<name>-workers`, keyed by worker id, whenever
its assignment changes, and a tombstone when it leaves; a reader folds the topic to the latest
entry per worker. A crashed worker's entry stays until its partitions are claimed again: the
newest claim wins.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer

from processor.runtime.kafka.topics import TopicError, read_to_end

log = logging.getLogger("processor.directory")


def directory_topic(topology: str) -> str:
    return f"{topology}-workers"


class WorkerDirectory:
    def __init__(self, client_conf: dict[str, Any], topology: str, worker_id: str,
                 url: str, *, cache_s: float = 2.0) -> None:
        self.topic = directory_topic(topology)
        self.worker_id = worker_id
        self.url = url
        self._conf = client_conf
        self._producer = Producer({**client_conf, "linger.ms": 0})
        self._cache: tuple[float, dict[tuple[str, int], str]] | None = None
        self.cache_s = cache_s

    def publish(self, assignment: dict[str, list[int]], member_id: str | None = None) -> None:
        """`member_id`: the worker's consumer-group member id, by which `savepoint create
        --stop-workers` tells which group member this entry is."""
        value = orjson.dumps({"url": self.url, "assignment": assignment, "time": time.time(),
                              "member_id": member_id})
        self._producer.produce(self.topic, value, self.worker_id.encode())
        if self._producer.flush(5):
            log.warning("worker directory entry not delivered within 5 s", extra={"topic": self.topic})
        self._cache = None

    def withdraw(self) -> None:
        self._producer.produce(self.topic, None, self.worker_id.encode())
        self._producer.flush(5)

    def owner(self, topic: str, partition: int) -> str | None:
        """The URL of the worker that most recently claimed (topic, partition)."""
        now = time.monotonic()
        if self._cache is None or now - self._cache[0] > self.cache_s:
            self._cache = (now, self._read())
        return self._cache[1].get((topic, partition))

    def _read(self) -> dict[tuple[str, int], str]:
        try:
            entries = read_entries(self._conf, self.topic)
        except TopicError as exc:  # the state API answers 503 until the directory is readable
            log.warning("cannot read the worker directory", extra={"error": str(exc)})
            entries = {}
        claims: dict[tuple[str, int], tuple[float, str]] = {}
        for entry in entries.values():
            for topic, parts in entry["assignment"].items():
                for p in parts:
                    old = claims.get((topic, p))
                    if old is None or entry["time"] > old[0]:
                        claims[(topic, p)] = (entry["time"], entry["url"])
        return {tp: url for tp, (_, url) in claims.items()}

    def close(self) -> None:
        self._producer.flush(5)


def read_entries(client_conf: dict[str, Any], topic: str) -> dict[str, dict[str, Any]]:
    """The directory folded to its latest entry per worker id (`url`, `assignment`, `time`);
    withdrawn workers left out. Raises TopicError when the topic cannot be read."""
    entries: dict[str, dict[str, Any] | None] = {}
    c = Consumer({**client_conf, "group.id": f"directory-reader-{uuid.uuid4().hex}",
                  "enable.auto.commit": False, "enable.partition.eof": True})
    try:
        for m in read_to_end(c, topic):
            entries[m.key().decode()] = orjson.loads(m.value()) if m.value() else None
    finally:
        c.close()
    return {worker: e for worker, e in entries.items() if e is not None}
