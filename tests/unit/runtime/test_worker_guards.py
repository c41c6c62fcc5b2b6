"""Guards the fault campaign called for. Under exactly_once a new task restores only
once the group's committed offsets of its partition are stable: a previous owner's transaction
holding offsets for it is over, so its changelog writes are all on the broker before the
restore looks for the end. Under at_least_once a checkpoint after the loop stood still longer
than the group tolerates writes no changelog (nothing would fence a member the group dropped)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from processor.runtime.task_manager import TaskManager
from processor.runtime.tasks.task import TaskState
from processor.runtime.worker import Worker


@dataclass
class _Task:
    id: str
    topic: str = "in"
    partition: int = 0
    state: TaskState = TaskState.RESTORING


@dataclass
class _Consumer:
    """committed() times out (offsets unstable) `unstable` times, then answers."""
    unstable: int
    calls: list[list[Any]] = field(default_factory=list)

    def committed(self, partitions: list[Any], timeout: float) -> list[Any]:
        self.calls.append(partitions)
        if self.unstable > 0:
            self.unstable -= 1
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT))
        return partitions


def _manager(consumer: _Consumer, tasks: list[_Task]) -> tuple[TaskManager, list[str]]:
    w = TaskManager.__new__(TaskManager)  # only what restore_when_stable touches
    restored: list[str] = []
    w.consumer = consumer  # type: ignore[assignment]
    w._unstable = list(tasks)  # type: ignore[arg-type]
    w._unstable_logged = 0.0
    w._restore = lambda task: restored.append(task.id)  # type: ignore[method-assign]
    return w, restored


def test_restore_waits_for_stable_offsets_then_starts():
    a, b = _Task("1_0", partition=0), _Task("1_1", partition=1)
    w, restored = _manager(_Consumer(unstable=2), [a, b])
    w.restore_when_stable()
    w.restore_when_stable()
    assert restored == [] and w._unstable == [a, b], "no restore while offsets are unstable"
    w.restore_when_stable()
    assert restored == ["1_0", "1_1"] and w._unstable == []


def test_a_task_revoked_while_waiting_is_dropped():
    a, b = _Task("1_0"), _Task("1_1", partition=1)
    consumer = _Consumer(unstable=1)
    w, restored = _manager(consumer, [a, b])
    w.restore_when_stable()
    a.state = TaskState.CLOSED
    w.restore_when_stable()
    assert restored == ["1_1"] and [p.partition for p in consumer.calls[-1]] == [1]


def test_membership_is_doubted_after_the_loop_stood_still():
    w = Worker.__new__(Worker)
    w.config = SimpleNamespace(max_poll_interval_ms=6000, session_timeout_ms=45_000)  # type: ignore[assignment]
    w.heartbeat = time.monotonic() - 1.0
    assert w._membership_doubt() is None
    w.heartbeat = time.monotonic() - 5.0  # 0.8 x the 6 s max.poll.interval is 4.8 s
    assert "stood still" in (w._membership_doubt() or "")
