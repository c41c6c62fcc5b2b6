"""The restorer finishes a store only at the high watermark: an EOF at a last stable offset
below it means a (zombie's) transaction is open, and committed writes may wait behind it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError

from processor.runtime.durability.restore import Restorer
from processor.state.store import META_CHANGELOG_OFFSET

TOPIC = "app-store-changelog"


class _Eof:
    def code(self) -> int:
        return KafkaError._PARTITION_EOF


@dataclass
class _Msg:
    end: int
    partition_: int = 0

    def error(self) -> _Eof:
        return _Eof()

    def topic(self) -> str:
        return TOPIC

    def partition(self) -> int:
        return self.partition_

    def offset(self) -> int:
        return self.end


@dataclass
class _Consumer:
    """A read_committed consumer at EOF: `lso` is where EOF comes, `high` the watermark."""
    lso: int
    high: int
    assigned: set[tuple[str, int]] = field(default_factory=set)

    def incremental_assign(self, tps: list[Any]) -> None:
        self.assigned |= {(tp.topic, tp.partition) for tp in tps}

    def incremental_unassign(self, tps: list[Any]) -> None:
        self.assigned -= {(tp.topic, tp.partition) for tp in tps}

    def consume(self, n: int, timeout: float) -> list[_Msg]:
        return [_Msg(self.lso)] if (TOPIC, 0) in self.assigned else []

    def get_watermark_offsets(self, tp: Any, cached: bool = False) -> tuple[int, int]:
        return 0, self.high


@dataclass
class _Store:
    changelog_offset: int | None = None
    changelog_id: str | None = None
    applied: list[dict[str, Any]] = field(default_factory=list)

    def apply(self, writes: dict[bytes, bytes | None], meta: dict[str, Any]) -> None:
        self.applied.append(meta)


@dataclass
class _Task:
    id: str = "1_0"
    partition: int = 0
    stores: dict[str, _Store] = field(default_factory=lambda: {"store": _Store()})
    changelogs: dict[str, str] = field(default_factory=lambda: {"store": TOPIC})


def _restorer(consumer: _Consumer, wait_s: float = 60.0) -> tuple[Restorer, list[Any]]:
    done: list[Any] = []
    return Restorer(consumer, done.append, open_txn_wait_s=wait_s), done  # type: ignore[arg-type]


def test_eof_at_the_high_watermark_finishes():
    consumer = _Consumer(lso=10, high=10)
    restorer, done = _restorer(consumer)
    task = _Task()
    restorer.add(task)  # type: ignore[arg-type]
    restorer.step(100, 0)
    assert done == [task] and not restorer.busy


def test_eof_below_the_high_watermark_waits_for_the_transaction():
    consumer = _Consumer(lso=10, high=14)  # a transaction open from offset 10
    restorer, done = _restorer(consumer)
    task = _Task()
    restorer.add(task)  # type: ignore[arg-type]
    for _ in range(3):
        restorer.step(100, 0)
    assert done == [] and restorer.busy, "must not start the task before the transaction ends"
    consumer.lso = 15  # it committed: its writes were read, then EOF at the new end
    consumer.high = 15
    restorer.step(100, 0)
    assert done == [task] and not restorer.blocked
    assert task.stores["store"].applied[-1] == {META_CHANGELOG_OFFSET: 15}


def test_waiting_is_bounded_by_the_transaction_timeout():
    consumer = _Consumer(lso=10, high=14)
    restorer, done = _restorer(consumer, wait_s=0.0)
    task = _Task()
    restorer.add(task)  # type: ignore[arg-type]
    restorer.step(100, 0)  # sees the open transaction; past the bound (0 s) it gives up,
    restorer.step(100, 0)  # restored to the last stable offset
    assert done == [task] and not restorer.busy and not restorer.blocked
