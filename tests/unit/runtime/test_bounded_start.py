"""Where a task over a topic range starts (TaskManager `start_at`, runtime/bounded_run.py): a
stateless task is paused at assignment (as a restoring one is) until it is sought to its
range start, or to the group's committed offset, which wins (a restart resumes)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from confluent_kafka import TopicPartition

from processor.graph import BuildContext, build_topology
from processor.observability.metrics import Metrics
from processor.runtime.task_manager import TaskManager
from processor.runtime.tasks.task import TaskState
from processor.spec import load_spec_text
from tests.unit.runtime.kafka_fakes import LogConsumer
from tests.unit.runtime.test_task_manager import SPEC, _GroupConsumer


def _manager(tmp_path, committed: int, exactly_once: bool = True,
             ) -> tuple[TaskManager, _GroupConsumer]:
    config = SimpleNamespace(state_dir=tmp_path, group_protocol="consumer", exactly_once=exactly_once,
                             auto_offset_reset="earliest")
    consumer = _GroupConsumer(committed=committed)
    manager = TaskManager(
        build_topology(load_spec_text(SPEC)), config, consumer, LogConsumer({}), None,  # type: ignore[arg-type]
        Metrics(), open_txn_wait_s=1.0,
        context_for=lambda p: BuildContext(emitter_for=lambda end, _p: [].extend, partition=p),
        checkpoint=lambda tasks: len(tasks), abort_uncommitted=lambda fatal: None,
        on_restored=lambda task: None, on_change=lambda: None, touch=lambda: None,
        start_at=lambda topic, partition: {0: 40}.get(partition))  # partition 1: not bounded
    return manager, consumer


@pytest.mark.parametrize("exactly_once", [True, False])
def test_a_stateless_bounded_task_starts_at_its_range_start(tmp_path, exactly_once):
    manager, consumer = _manager(tmp_path, committed=-1001, exactly_once=exactly_once)
    manager.on_assign(consumer, [TopicPartition("orders", 0), TopicPartition("orders", 1)])  # type: ignore[arg-type]
    assert consumer.calls == [("assign", [("orders", 0), ("orders", 1)]),
                              ("pause", [("orders", 0)])], "the unbounded one runs at once"
    held, free = manager.tasks[("orders", 0)], manager.tasks[("orders", 1)]
    # held: records fetched before the pause took effect are not processed (the worker
    # hands records to running tasks only)
    assert held.state is TaskState.RESTORING and free.state is TaskState.RUNNING
    assert manager.restoring, "the run is not over before every task started"
    manager.restore_when_stable()  # the worker's loop, outside the rebalance callback
    assert consumer.calls[2:] == [("seek", "orders", 0, 40), ("resume", [("orders", 0)])]
    assert held.state is TaskState.RUNNING and not manager.restoring


def test_a_committed_offset_wins_over_the_range_start(tmp_path):
    manager, consumer = _manager(tmp_path, committed=57)
    manager.on_assign(consumer, [TopicPartition("orders", 0)])  # type: ignore[arg-type]
    manager.restore_when_stable()
    assert consumer.calls[-2:] == [("seek", "orders", 0, 57), ("resume", [("orders", 0)])]
    assert manager.tasks[("orders", 0)].position == 57
