"""In-memory stand-ins for the confluent_kafka clients the runtime parts drive: a log of
partitions read by an assign()-only consumer, and a producer that records what it was asked
to do, in order. Only the calls the parts make, with the same signatures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition


@dataclass
class Msg:
    """A consumed record, or a partition EOF (`eof`: its offset is the end)."""
    topic_: str
    partition_: int
    offset_: int
    key_: bytes | None = None
    value_: bytes | None = None
    eof: bool = False

    def topic(self) -> str:
        return self.topic_

    def partition(self) -> int:
        return self.partition_

    def offset(self) -> int:
        return self.offset_

    def key(self) -> bytes | None:
        return self.key_

    def value(self) -> bytes | None:
        return self.value_

    def error(self) -> KafkaError | None:
        return KafkaError(KafkaError._PARTITION_EOF) if self.eof else None


class LogConsumer:
    """Partitions as lists of (key, value); assigned partitions are read from their offset and
    report EOF each time they reach their end (as with `enable.partition.eof`); an offset
    beyond the end reads from the start (`auto.offset.reset: earliest`)."""

    def __init__(self, logs: dict[tuple[str, int], list[tuple[bytes | None, bytes | None]]]) -> None:
        self.logs = logs
        self.positions: dict[tuple[str, int], int] = {}
        self._at_eof: set[tuple[str, int]] = set()
        self.assigns: list[list[tuple[str, int, int]]] = []
        self.closed = False

    def incremental_assign(self, tps: list[TopicPartition]) -> None:
        self.assigns.append([(tp.topic, tp.partition, tp.offset) for tp in tps])
        for tp in tps:
            key = (tp.topic, tp.partition)
            beyond = tp.offset > len(self.logs.get(key, []))  # auto.offset.reset: earliest
            self.positions[key] = 0 if tp.offset == OFFSET_BEGINNING or beyond else tp.offset
            self._at_eof.discard(key)

    def incremental_unassign(self, tps: list[TopicPartition]) -> None:
        for tp in tps:
            self.positions.pop((tp.topic, tp.partition), None)

    def consume(self, num_messages: int, timeout: float) -> list[Msg]:
        out: list[Msg] = []
        for key, pos in list(self.positions.items()):
            log = self.logs.get(key, [])
            while pos < len(log) and len(out) < num_messages:
                k, v = log[pos]
                out.append(Msg(key[0], key[1], pos, k, v))
                pos += 1
            self.positions[key] = pos
            if pos >= len(log) and key not in self._at_eof and len(out) < num_messages:
                out.append(Msg(key[0], key[1], pos, eof=True))
                self._at_eof.add(key)
            elif pos < len(log):
                self._at_eof.discard(key)
        return out

    def append(self, topic: str, partition: int, key: bytes | None, value: bytes | None) -> None:
        self.logs.setdefault((topic, partition), []).append((key, value))
        self._at_eof.discard((topic, partition))

    def get_watermark_offsets(self, tp: TopicPartition, cached: bool = False) -> tuple[int, int]:
        return 0, len(self.logs.get((tp.topic, tp.partition), []))

    def close(self) -> None:
        self.closed = True


class RecordingProducer:
    """Appends every call to `events`; delivery reports are served by flush() and poll(),
    each record getting the next offset of its partition. `failing` topics report an error;
    `on_delivery` is the client-wide callback (the `on_delivery` producer property)."""

    def __init__(self, events: list[tuple[Any, ...]], *, on_delivery: Any = None,
                 failing: frozenset[str] = frozenset(), commit_errors: list[KafkaError] | None = None,
                 undelivered: int = 0) -> None:
        self.events = events
        self.on_delivery = on_delivery
        self.failing = failing
        self.commit_errors = list(commit_errors or [])
        self.undelivered = undelivered
        self._queued: list[tuple[str, int, bytes | None, Any]] = []
        self._next: dict[tuple[str, int], int] = {}

    def produce(self, topic: str, value: bytes | None, key: bytes | None = None, *,
                partition: int = 0, on_delivery: Any = None) -> None:
        self.events.append(("produce", topic, key))
        self._queued.append((topic, partition, key, on_delivery or self.on_delivery))

    def _deliver(self) -> None:
        queued, self._queued = self._queued, []
        for topic, partition, key, callback in queued:
            offset = self._next.get((topic, partition), 0)
            self._next[(topic, partition)] = offset + 1
            if callback is not None:
                err = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE) if topic in self.failing else None
                callback(err, Msg(topic, partition, offset, key))

    def flush(self, timeout: float) -> int:
        self.events.append(("flush",))
        self._deliver()
        return self.undelivered

    def poll(self, timeout: float) -> int:
        self._deliver()
        return 0

    def send_offsets_to_transaction(self, offsets: list[TopicPartition], metadata: Any,
                                    timeout: float) -> None:
        self.events.append(("send_offsets", [(o.topic, o.partition, o.offset) for o in offsets]))

    def commit_transaction(self, timeout: float) -> None:
        if self.commit_errors:
            self.events.append(("commit_transaction failed",))
            raise KafkaException(self.commit_errors.pop(0))
        self.events.append(("commit_transaction",))

    def begin_transaction(self) -> None:
        self.events.append(("begin_transaction",))
