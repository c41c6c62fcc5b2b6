"""In-memory topics and the producer that writes them: the Kafka transport of the test driver.

Everything else the driver runs is the real thing (graph, tasks, operators, the record
collector, the dead-letter writer, RocksDB stores); only the broker is replaced. Records are
produced inside a transaction, as under exactly-once: they are visible to readers
(read_committed) only once the driver commits, and a crash aborts them. A record produced
without a partition goes where Kafka's default partitioner puts it (murmur2 of the key).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

from processor.state.partitioner import partition_for


@dataclass
class StoredRecord:
    key: bytes | None
    value: bytes | None
    timestamp: int
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    # a control entry rather than a record: the source partition's event time reached this
    # watermark (the driver's watermark step). Like Kafka's transaction markers it takes an
    # offset and no consumer sees it as a record; only the driver's task loop acts on it.
    watermark: int | None = None


class Message:
    """A consumed record with the accessors of confluent_kafka.Message the tasks call."""

    __slots__ = ("_offset", "_partition", "_record", "_topic")

    def __init__(self, topic: str, partition: int, offset: int,
                 record: StoredRecord | None) -> None:
        """`record` None: the end of the partition (as with `enable.partition.eof`)."""
        self._topic, self._partition, self._offset, self._record = topic, partition, offset, record

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    @property
    def watermark(self) -> int | None:
        """The watermark of a control entry (StoredRecord.watermark); None for a record."""
        return self._record.watermark if self._record else None

    def key(self) -> bytes | None:
        return self._record.key if self._record else None

    def value(self) -> bytes | None:
        return self._record.value if self._record else None

    def headers(self) -> list[tuple[str, bytes]] | None:
        return (self._record.headers or None) if self._record else None

    def timestamp(self) -> tuple[int, int]:
        return (1, self._record.timestamp if self._record else 0)

    def error(self) -> KafkaError | None:
        return KafkaError(KafkaError._PARTITION_EOF) if self._record is None else None


class Topics:
    """Partitioned logs; each partition keeps its committed length (the last stable offset)."""

    def __init__(self) -> None:
        self.partitions: dict[str, int] = {}  # topic -> partition count (the collector reads it)
        self.logs: dict[tuple[str, int], list[StoredRecord]] = {}
        self.stable: dict[tuple[str, int], int] = {}  # committed length per partition

    def create(self, topic: str, partitions: int) -> None:
        self.partitions.setdefault(topic, partitions)

    def append(self, topic: str, partition: int, record: StoredRecord) -> None:
        self.logs.setdefault((topic, partition), []).append(record)

    def read(self, topic: str, partition: int, start: int, *,
             control: bool = False) -> list[Message]:
        """Committed records of one partition from offset `start` (read_committed); control
        entries (watermarks) only for the driver's task loop, which asks for them."""
        log = self.logs.get((topic, partition), [])
        end = self.stable.get((topic, partition), 0)
        return [Message(topic, partition, o, log[o]) for o in range(start, end)
                if control or log[o].watermark is None]

    def committed(self, topic: str) -> list[tuple[int, int, StoredRecord]]:
        """(partition, offset, record) of every committed record, partition by partition."""
        out = []
        for p in range(self.partitions.get(topic, 0)):
            log = self.logs.get((topic, p), [])
            out += [(p, o, log[o]) for o in range(self.stable.get((topic, p), 0))
                    if log[o].watermark is None]
        return out

    def commit(self) -> None:
        for tp, log in self.logs.items():
            self.stable[tp] = len(log)

    def abort(self) -> None:
        for tp, log in self.logs.items():
            del log[self.stable.get(tp, 0):]


class TopicsProducer:
    """The producer calls the record collector and the dead-letter writer make."""

    def __init__(self, topics: Topics) -> None:
        self.topics = topics

    def produce(self, topic: str, value: bytes | None = None, key: bytes | None = None, *,
                partition: int | None = None, timestamp: int | None = None,
                headers: list[tuple[str, bytes]] | None = None, on_delivery: Any = None) -> None:
        count = self.topics.partitions.get(topic, 1)
        if partition is None:
            partition = partition_for(key, count) if key is not None else 0
        self.topics.append(topic, partition, StoredRecord(key, value, timestamp or 0,
                                                          list(headers or [])))

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        return 0


class TopicsConsumer:
    """An assign()-only consumer of committed records, for the table follower
    (runtime/durability/tables.py): each assigned partition reports its end once reached."""

    def __init__(self, topics: Topics) -> None:
        self.topics = topics
        self.positions: dict[tuple[str, int], int] = {}
        self._at_end: set[tuple[str, int]] = set()

    def incremental_assign(self, tps: list[TopicPartition]) -> None:
        for tp in tps:
            key = (tp.topic, tp.partition)
            self.positions[key] = 0 if tp.offset in (OFFSET_BEGINNING, -1001) else tp.offset
            self._at_end.discard(key)

    def incremental_unassign(self, tps: list[TopicPartition]) -> None:
        for tp in tps:
            self.positions.pop((tp.topic, tp.partition), None)

    def consume(self, num_messages: int, timeout: float) -> list[Message]:
        out: list[Message] = []
        for (topic, p), pos in list(self.positions.items()):
            msgs = self.topics.read(topic, p, pos, control=True)[:max(0, num_messages - len(out))]
            out += [m for m in msgs if m.watermark is None]
            pos += len(msgs)
            self.positions[(topic, p)] = pos
            if pos >= self.topics.stable.get((topic, p), 0):
                if (topic, p) not in self._at_end:
                    out.append(Message(topic, p, pos, None))
                    self._at_end.add((topic, p))
            else:
                self._at_end.discard((topic, p))
        return out

    def get_watermark_offsets(self, tp: TopicPartition, cached: bool = False) -> tuple[int, int]:
        return 0, self.topics.stable.get((tp.topic, tp.partition), 0)

    def close(self) -> None:
        self.positions.clear()
