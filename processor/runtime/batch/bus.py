"""The repartition topics of a batch run, in memory, behind the producer interface.

The record collector writes every output through `produce(...)`; here a repartition topic's
record is appended to an in-memory partition (Kafka's partitioner on its key, as a worker's
producer would), read once by the downstream task and dropped, so memory holds one round of
records, not the run. Any other topic (sinks, late records, dead letters) goes to `outside`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from processor.state.partitioner import partition_for


class BusMessage:
    """A record of an in-memory topic with the accessors of confluent_kafka.Message that
    tasks call."""

    __slots__ = ("_headers", "_key", "_offset", "_partition", "_timestamp", "_topic", "_value")

    def __init__(self, topic: str, partition: int, offset: int, key: bytes | None,
                 value: bytes | None, timestamp: int,
                 headers: list[tuple[str, bytes]] | None) -> None:
        self._topic, self._partition, self._offset = topic, partition, offset
        self._key, self._value, self._timestamp, self._headers = key, value, timestamp, headers

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return (1, self._timestamp)

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers

    def error(self) -> None:
        return None


class Bus:
    """Producer-shaped: in-memory partitions for `internal` topics, `outside()` for the rest
    (created on first use, so a run writing only files needs no broker)."""

    def __init__(self, internal: dict[str, int], outside: Callable[[], Any]) -> None:
        self.partitions = internal  # repartition topic -> partition count
        self._outside = outside
        self._logs: dict[tuple[str, int], list[BusMessage]] = {
            (t, p): [] for t, n in internal.items() for p in range(n)}
        self._next: dict[tuple[str, int], int] = dict.fromkeys(self._logs, 0)
        self._routes: dict[tuple[str, bytes], int] = {}  # (topic, key) -> partition: murmur2 once

    def produce(self, topic: str, value: bytes | None = None, key: bytes | None = None, *,
                partition: int | None = None, timestamp: int = 0,
                headers: list[tuple[str, bytes]] | None = None) -> None:
        count = self.partitions.get(topic)
        if count is None:
            kwargs: dict[str, Any] = {"timestamp": timestamp}
            if partition is not None:
                kwargs["partition"] = partition
            if headers:
                kwargs["headers"] = headers
            self._outside().produce(topic, value, key, **kwargs)
            return
        if partition is None:
            partition = 0 if key is None else self._route(topic, key, count)
        tp = (topic, partition)
        offset = self._next[tp]
        self._next[tp] = offset + 1
        self._logs[tp].append(BusMessage(topic, partition, offset, key, value, timestamp, headers))

    def _route(self, topic: str, key: bytes, count: int) -> int:
        routes = self._routes
        p = routes.get((topic, key))
        if p is None:
            if len(routes) > 1_000_000:
                routes.clear()
            p = routes[(topic, key)] = partition_for(key, count)
        return p

    def poll(self, timeout: float = 0) -> int:
        """Delivery reports of the outside producer (produce_when_room calls it)."""
        return self._outside().poll(timeout)

    def take(self, topic: str, partition: int) -> list[BusMessage]:
        """Everything written to a partition since the last take (read once, then dropped)."""
        tp = (topic, partition)
        out = self._logs[tp]
        if out:
            self._logs[tp] = []
        return out

    def pending(self) -> bool:
        return any(self._logs.values())
