"""The task manager's rebalance callbacks with a stateless topology and a recording consumer:
a revoke checkpoints every task before it closes the revoked ones; a failed checkpoint closes
every task dirty before the producer's work is dropped, and reopens the kept partitions at
their committed offsets; a task whose input cannot start is left for the loop to recover."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from processor.graph import BuildContext, build_topology
from processor.observability.metrics import Metrics
from processor.runtime.durability.checkpoint import CheckpointFailed
from processor.runtime.task_manager import TaskManager
from processor.runtime.tasks.task import Task, TaskState
from processor.spec import load_spec_text
from processor.timeutil.watermark import NO_WATERMARK
from tests.unit.runtime.kafka_fakes import LogConsumer

SPEC = """
name: shop
sources:
  orders: {topic: orders}
pipelines:
  - from: orders
    steps:
      - map: "value"
      - to: {topic: out}
"""


class _GroupConsumer:
    """The calls a task manager makes on the group consumer, recorded in order."""

    def __init__(self, committed: int = 7) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.committed_offset = committed
        self.refuse_committed = False

    def _tps(self, tps: list[TopicPartition]) -> list[tuple[str, int]]:
        return [(tp.topic, tp.partition) for tp in tps]

    def incremental_assign(self, tps: list[TopicPartition]) -> None:
        self.calls.append(("assign", self._tps(tps)))

    def incremental_unassign(self, tps: list[TopicPartition]) -> None:
        self.calls.append(("unassign", self._tps(tps)))

    def pause(self, tps: list[TopicPartition]) -> None:
        self.calls.append(("pause", self._tps(tps)))

    def resume(self, tps: list[TopicPartition]) -> None:
        self.calls.append(("resume", self._tps(tps)))

    def seek(self, tp: TopicPartition) -> None:
        self.calls.append(("seek", tp.topic, tp.partition, tp.offset))

    def committed(self, tps: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        if self.refuse_committed:
            raise KafkaException(KafkaError(KafkaError.NOT_COORDINATOR))
        return [TopicPartition(tp.topic, tp.partition, self.committed_offset) for tp in tps]


class _Owner:
    """The worker's side: records the callbacks."""

    def __init__(self) -> None:
        self.checkpointed: list[list[Task]] = []
        self.aborted: list[tuple[bool, dict[Any, Task]]] = []
        self.changes = 0
        self.fail: CheckpointFailed | None = None
        self.manager: TaskManager | None = None

    def checkpoint(self, tasks: list[Task]) -> int:
        self.checkpointed.append(tasks)
        if self.fail is not None:
            raise self.fail
        return len(tasks)

    def abort_uncommitted(self, fatal: bool) -> None:
        assert self.manager is not None
        self.aborted.append((fatal, dict(self.manager.tasks)))  # the tasks still open


def _manager(tmp_path: Any) -> tuple[TaskManager, _GroupConsumer, _Owner]:
    topology = build_topology(load_spec_text(SPEC))
    config = SimpleNamespace(state_dir=tmp_path, group_protocol="consumer", exactly_once=False,
                             auto_offset_reset="earliest")
    consumer, owner = _GroupConsumer(), _Owner()
    manager = TaskManager(
        topology, config, consumer, LogConsumer({}), None, Metrics(),  # type: ignore[arg-type]
        open_txn_wait_s=1.0,
        context_for=lambda p: BuildContext(emitter_for=lambda end, _p: [].extend, partition=p),
        checkpoint=owner.checkpoint, abort_uncommitted=owner.abort_uncommitted,
        on_restored=lambda task: None, on_change=lambda: setattr(owner, "changes", owner.changes + 1),
        touch=lambda: None)
    owner.manager = manager
    return manager, consumer, owner


def _tps(*partitions: int) -> list[TopicPartition]:
    return [TopicPartition("orders", p) for p in partitions]


def test_assign_opens_a_running_task_per_partition(tmp_path):
    manager, consumer, owner = _manager(tmp_path)
    assert not manager.assigned_once
    manager.on_assign(consumer, _tps(0, 1))  # type: ignore[arg-type]
    assert sorted(manager.tasks) == [("orders", 0), ("orders", 1)]
    assert all(t.state is TaskState.RUNNING for t in manager.tasks.values()), "stateless"
    assert consumer.calls == [("assign", [("orders", 0), ("orders", 1)])], "nothing to pause"
    assert manager.assigned_once and owner.changes == 1
    assert manager.assignment() == {"orders": [0, 1]}


def test_revoke_checkpoints_every_task_then_closes_the_revoked(tmp_path):
    manager, consumer, owner = _manager(tmp_path)
    manager.on_assign(consumer, _tps(0, 1))  # type: ignore[arg-type]
    kept, revoked = manager.tasks[("orders", 0)], manager.tasks[("orders", 1)]
    manager.on_revoke(consumer, _tps(1))  # type: ignore[arg-type]
    assert owner.checkpointed == [[kept, revoked]], "one checkpoint spans every task"
    assert revoked.state is TaskState.CLOSED and kept.state is TaskState.RUNNING
    assert manager.tasks == {("orders", 0): kept}
    assert consumer.calls[-1] == ("unassign", [("orders", 1)]) and owner.changes == 2


def test_failed_checkpoint_on_revoke_closes_all_dirty_and_reopens_the_kept(tmp_path):
    manager, consumer, owner = _manager(tmp_path)
    manager.on_assign(consumer, _tps(0, 1))  # type: ignore[arg-type]
    before = dict(manager.tasks)
    owner.fail = CheckpointFailed("commit failed: fenced", fatal=True)
    manager.on_revoke(consumer, _tps(1))  # type: ignore[arg-type]
    assert owner.aborted == [(True, {})], "the producer's work is dropped once every task is closed"
    assert all(t.state is TaskState.CLOSED for t in before.values())
    reopened = manager.tasks[("orders", 0)]
    assert list(manager.tasks) == [("orders", 0)] and reopened is not before[("orders", 0)]
    assert consumer.calls[1:] == [
        ("unassign", [("orders", 1)]),
        ("seek", "orders", 0, 7), ("resume", [("orders", 0)]),  # rewound to the commit
    ]
    assert reopened.position == reopened.committed_position == 7
    assert manager.take_failed_start() is None


def test_lost_partitions_close_every_task_dirty(tmp_path):
    manager, consumer, owner = _manager(tmp_path)
    manager.on_assign(consumer, _tps(0, 1))  # type: ignore[arg-type]
    manager.on_lost(consumer, _tps(0, 1))  # type: ignore[arg-type]
    assert owner.checkpointed == [], "no checkpoint for partitions already gone"
    assert owner.aborted == [(False, {})]
    assert manager.tasks == {} and consumer.calls[-1] == ("unassign", [("orders", 0), ("orders", 1)])


def test_a_reopened_task_that_cannot_start_is_left_for_the_loop(tmp_path):
    manager, consumer, _ = _manager(tmp_path)
    manager.on_assign(consumer, _tps(0))  # type: ignore[arg-type]
    consumer.refuse_committed = True  # e.g. NOT_COORDINATOR after a broker restart
    manager.reset(consumer, gone=[], fatal=False)  # type: ignore[arg-type]
    failed = manager.take_failed_start()
    assert failed is not None and not failed.fatal and "cannot start task" in str(failed)
    assert manager.take_failed_start() is None, "handed over once"
    assert manager.tasks[("orders", 0)].state is TaskState.RUNNING, "reopened, input not started"


class _RestoringTask:
    """A task with stores and a per-task table, as a table join before an aggregate has."""

    id, topic, partition = "0_0", "orders", 0

    def __init__(self) -> None:
        self.state = TaskState.RESTORING
        self.stores: dict[str, Any] = {}

    def restored(self) -> None:
        self.state = TaskState.RUNNING

    def start_position(self) -> int | None:
        return None

    watermark = NO_WATERMARK

    def silent_upstream(self) -> list[str]:
        return []


def test_a_task_starts_only_once_its_stores_and_its_tables_are_caught_up(tmp_path):
    """Found in the worker split: the restorer started a task as soon as its stores were
    restored, while its table could still be loading (records joined against a partial
    table) and the table's later readiness was ignored."""
    manager, consumer, _ = _manager(tmp_path)
    task = _RestoringTask()
    manager._waiting[task.id] = {"stores", "table rates"}
    manager.restorer.on_restored(task)  # type: ignore[arg-type]
    assert task.state is TaskState.RESTORING, "the table is still loading"
    assert consumer.calls == []
    manager._ready(task, "table rates")  # type: ignore[arg-type]
    assert task.state is TaskState.RUNNING and task.id not in manager._waiting
    assert consumer.calls == [("seek", "orders", 0, 7), ("resume", [("orders", 0)])]
