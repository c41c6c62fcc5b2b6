"""The checkpointer against recording fakes: what reaches Kafka, in which order, and that
nothing reaches the local stores unless the commit returned.

exactly_once: outputs, changelog writes and offsets in one transaction, committed once.
at_least_once: outputs flushed, then changelogs flushed, then offsets committed; a member
that may have been dropped by the group (its loop stood still) writes no changelog."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from processor.observability.metrics import Metrics
from processor.runtime.durability import checkpoint as checkpoint_module
from processor.runtime.durability.checkpoint import Checkpointer, CheckpointFailed
from processor.runtime.tasks.task import TaskState
from processor.state import POSITION_KEY
from tests.unit.runtime.kafka_fakes import RecordingProducer

CHANGELOG = "app-counts-changelog"


@dataclass
class _Task:
    """What the checkpointer asks of a task; `flush` emits one output record, as a cached
    aggregate would, and stages one changelog write."""
    producer: RecordingProducer
    partition: int = 0
    topic: str = "in"
    position: int | None = 10
    committed_position: int | None = None
    state: TaskState = TaskState.RUNNING
    changelogs: dict[str, str] = field(default_factory=lambda: {"counts": CHANGELOG})
    pending: dict[str, dict[bytes, bytes | None]] = field(default_factory=dict)
    stored: list[dict[str, int]] = field(default_factory=list)  # what reached "RocksDB"
    writes: dict[bytes, bytes | None] = field(default_factory=lambda: {b"k": b"3"})

    @property
    def has_progress(self) -> bool:
        return self.position is not None and self.position != self.committed_position

    def flush(self) -> None:
        self.producer.produce("out", b"total", b"k", partition=self.partition)
        self.pending = {"counts": dict(self.writes)}

    def position_record(self) -> bytes | None:
        return None if self.position is None else b'{"position":%d}' % self.position

    def layout_record(self, store: str) -> bytes | None:
        return None  # recorded earlier (tests/unit/runtime/tasks/test_layouts.py writes one)

    def committed(self, changelog_next: dict[str, int]) -> None:
        self.stored.append(changelog_next)
        self.pending = {}
        self.committed_position = self.position


class _Consumer:
    def __init__(self, events: list[tuple[Any, ...]], fail: KafkaError | None = None) -> None:
        self.events = events
        self.fail = fail

    def consumer_group_metadata(self) -> str:
        return "group-metadata"

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        assert asynchronous is False
        if self.fail is not None:
            raise KafkaException(self.fail)
        self.events.append(("commit", [(o.topic, o.partition, o.offset) for o in offsets]))


def _setup(exactly_once: bool, **producer_options: Any
           ) -> tuple[Checkpointer, RecordingProducer, list[tuple[Any, ...]], list[KafkaError]]:
    events: list[tuple[Any, ...]] = []
    errors: list[KafkaError] = []
    producer = RecordingProducer(events, on_delivery=lambda err, msg: err and errors.append(err),
                                 **producer_options)
    cp = Checkpointer(producer, _Consumer(events), exactly_once=exactly_once,  # type: ignore[arg-type]
                      metrics=Metrics(), delivery_errors=errors)
    return cp, producer, events, errors


def _count(cp: Checkpointer, name: str, result: str) -> float:
    return cp.metrics.registry.get_sample_value(name, {"result": result}) or 0.0


# -- exactly_once ---------------------------------------------------------------------------


def test_exactly_once_commits_outputs_changelogs_and_offsets_in_one_transaction():
    cp, producer, events, _ = _setup(exactly_once=True)
    task = _Task(producer)
    assert cp.checkpoint([task]) == 1  # type: ignore[list-item]
    assert events == [
        ("produce", "out", b"k"),                       # the task's flushed output
        ("produce", CHANGELOG, b"k"),                    # its store write
        ("produce", CHANGELOG, POSITION_KEY),            # the position record
        ("send_offsets", [("in", 0, 10)]),               # offsets inside the transaction
        ("commit_transaction",),
        ("begin_transaction",),                          # the next checkpoint's transaction
    ]
    # the stores are written after the commit, restoring from after the position record
    assert task.stored == [{"counts": 2}] and task.committed_position == 10
    assert _count(cp, "processor_checkpoints_total", "ok") == 1
    assert _count(cp, "processor_transactions_total", "committed") == 1


def test_exactly_once_retries_a_retriable_commit_error():
    retriable = KafkaError(KafkaError.REQUEST_TIMED_OUT, retriable=True)
    cp, producer, events, _ = _setup(exactly_once=True, commit_errors=[retriable])
    task = _Task(producer)
    assert cp.checkpoint([task]) == 1  # type: ignore[list-item]
    assert [e for e in events if e[0].startswith("commit")] == [
        ("commit_transaction failed",), ("commit_transaction",)]
    assert task.stored == [{"counts": 2}]


def test_exactly_once_gives_up_retrying_the_commit_within_its_budget(monkeypatch):
    """Retriable commit errors (the broker restarting) are retried only within the checkpoint's
    budget, then the checkpoint fails (not fatal) so the loop turns again and reopens its tasks,
    instead of standing still past a liveness probe."""
    monkeypatch.setattr(checkpoint_module, "COMMIT_BUDGET_S", 0.5)
    retriable = KafkaError(KafkaError.REQUEST_TIMED_OUT, retriable=True)
    cp, producer, events, _ = _setup(exactly_once=True, commit_errors=[retriable] * 3)
    task = _Task(producer)
    with pytest.raises(CheckpointFailed, match=r"not committed within 0\.5s") as failed:
        cp.checkpoint([task])  # type: ignore[list-item]
    assert failed.value.fatal is False
    assert [e for e in events if e[0].startswith("commit")] == [("commit_transaction failed",)]
    assert task.stored == []


def test_exactly_once_gives_up_on_send_offsets_stuck_past_its_timeout(monkeypatch):
    """librdkafka 2.16 can block in send_offsets_to_transaction past its own timeout (the
    group coordinator gone after a broker restart): the checkpoint fails (not fatal), commits
    nothing and writes no store; the worker then replaces the producer."""
    monkeypatch.setattr(checkpoint_module, "SEND_OFFSETS_TIMEOUT_S", 0.05)
    monkeypatch.setattr(checkpoint_module, "SEND_OFFSETS_GRACE_S", 0.05)  # 0.1 s in all
    cp, producer, events, _ = _setup(exactly_once=True)
    release = threading.Event()
    monkeypatch.setattr(producer, "send_offsets_to_transaction",
                        lambda offsets, metadata, timeout: release.wait(30))
    task = _Task(producer)
    try:
        with pytest.raises(CheckpointFailed, match=r"did not return within 0\.1s") as failed:
            cp.checkpoint([task])  # type: ignore[list-item]
    finally:
        release.set()
    assert failed.value.fatal is False
    assert not [e for e in events if e[0].startswith("commit")]
    assert task.stored == []
    assert _count(cp, "processor_checkpoints_total", "failed") == 1


def test_exactly_once_send_offsets_error_reaches_the_checkpoint(monkeypatch):
    cp, producer, _, _ = _setup(exactly_once=True)

    def refuse(offsets: Any, metadata: Any, timeout: float) -> None:
        raise KafkaException(KafkaError(KafkaError._FENCED, fatal=True))

    monkeypatch.setattr(producer, "send_offsets_to_transaction", refuse)
    with pytest.raises(CheckpointFailed) as failed:
        cp.checkpoint([_Task(producer)])  # type: ignore[list-item]
    assert failed.value.fatal is True


def test_exactly_once_failed_commit_writes_no_store_and_says_if_fatal():
    fenced = KafkaError(KafkaError._FENCED, fatal=True)
    cp, producer, events, _ = _setup(exactly_once=True, commit_errors=[fenced])
    seen: list[Any] = []
    cp.on_committed = seen.append
    task = _Task(producer)
    with pytest.raises(CheckpointFailed) as failed:
        cp.checkpoint([task])  # type: ignore[list-item]
    assert failed.value.fatal and "commit failed" in str(failed.value)
    assert task.stored == [] and task.committed_position is None, "nothing reached RocksDB"
    assert ("begin_transaction",) not in events, "the worker replaces the producer (aborts)"
    assert seen == [], "no purge of offsets that were not committed"
    assert _count(cp, "processor_checkpoints_total", "failed") == 1
    assert _count(cp, "processor_checkpoints_total", "ok") == 0


def test_only_running_tasks_with_progress_are_checkpointed():
    cp, producer, events, _ = _setup(exactly_once=True)
    seen: list[Any] = []
    cp.on_committed = seen.append
    restoring = _Task(producer, partition=1, state=TaskState.RESTORING)
    idle = _Task(producer, partition=2, committed_position=10)
    assert cp.checkpoint([restoring, idle]) == 0  # type: ignore[list-item]
    assert events == [] and seen == [[]], "nothing to commit; the purge still gets its turn"
    assert restoring.stored == [] and idle.stored == []


def test_the_restore_point_follows_the_last_changelog_record_of_many():
    """Only the last record of a changelog partition asks for its own delivery report; the
    restore point is still past the position record, on every partition written."""
    cp, producer, events, _ = _setup(exactly_once=True)
    many = {b"k%d" % i: b"%d" % i for i in range(5)}
    tasks = [_Task(producer, partition=0, writes=many), _Task(producer, partition=1)]
    assert cp.checkpoint(tasks) == 2  # type: ignore[arg-type]
    changelog = [e[2] for e in events if e[:2] == ("produce", CHANGELOG)]
    assert changelog == [*many, POSITION_KEY, b"k", POSITION_KEY]
    assert tasks[0].stored == [{"counts": 6}] and tasks[1].stored == [{"counts": 2}]


# -- at_least_once --------------------------------------------------------------------------


def test_at_least_once_flushes_outputs_then_changelogs_then_commits_offsets():
    cp, producer, events, _ = _setup(exactly_once=False)
    cp.membership_doubt = lambda: events.append(("doubt?",))  # type: ignore[func-returns-value]
    seen: list[list[TopicPartition]] = []
    cp.on_committed = seen.append
    task = _Task(producer)
    assert cp.checkpoint([task]) == 1  # type: ignore[list-item]
    assert events == [
        ("produce", "out", b"k"),
        ("flush",),                                      # outputs delivered first
        ("doubt?",),                                     # asked right before the changelogs
        ("produce", CHANGELOG, b"k"),
        ("produce", CHANGELOG, POSITION_KEY),
        ("flush",),                                      # changelogs delivered
        ("commit", [("in", 0, 10)]),                     # then the offsets
    ]
    assert task.stored == [{"counts": 2}]
    assert [(o.topic, o.partition, o.offset) for o in seen[0]] == [("in", 0, 10)]
    assert _count(cp, "processor_transactions_total", "committed") == 0


def test_at_least_once_membership_doubt_writes_no_changelog():
    cp, producer, events, _ = _setup(exactly_once=False)
    cp.membership_doubt = lambda: "the loop stood still 9.0s (limit 4.8s)"
    task = _Task(producer)
    with pytest.raises(CheckpointFailed) as failed:
        cp.checkpoint([task])  # type: ignore[list-item]
    assert not failed.value.fatal and "stood still" in str(failed.value)
    assert events == [("produce", "out", b"k"), ("flush",)], "outputs only: no changelog, no commit"
    assert task.stored == []
    assert _count(cp, "processor_checkpoints_total", "failed") == 1


def test_at_least_once_failed_output_delivery_stops_before_the_changelogs():
    cp, producer, events, errors = _setup(exactly_once=False, failing=frozenset({"out"}))
    task = _Task(producer)
    with pytest.raises(CheckpointFailed) as failed:
        cp.checkpoint([task])  # type: ignore[list-item]
    assert "delivery failed (outputs)" in str(failed.value) and not failed.value.fatal
    assert [e for e in events if e[0] == "produce"] == [("produce", "out", b"k")]
    assert errors == [], "reported once, then cleared"
    assert task.stored == []


def test_at_least_once_failed_changelog_delivery_fails_the_checkpoint():
    """A changed entry without a report of its own still reaches the producer's default
    report: its failure fails the checkpoint before any offset is committed."""
    cp, producer, events, errors = _setup(exactly_once=False, failing=frozenset({CHANGELOG}))
    task = _Task(producer, writes={b"a": b"1", b"b": b"2", b"c": b"3"})
    with pytest.raises(CheckpointFailed, match=r"delivery failed \(changelogs\).* and 3 more"):
        cp.checkpoint([task])  # type: ignore[list-item]
    assert not [e for e in events if e[0] == "commit"] and task.stored == []
    assert errors == [], "reported once, then cleared"


def test_at_least_once_undelivered_outputs_fail_the_checkpoint():
    cp, producer, _, _ = _setup(exactly_once=False, undelivered=3)
    task = _Task(producer)
    with pytest.raises(CheckpointFailed, match="3 records not delivered within 60s") as failed:
        cp.checkpoint([task])  # type: ignore[list-item]
    assert not failed.value.fatal and task.stored == []


def test_at_least_once_failed_commit_writes_no_store():
    cp, producer, events, _ = _setup(exactly_once=False)
    cp.consumer.fail = KafkaError(KafkaError.REBALANCE_IN_PROGRESS)  # type: ignore[attr-defined]
    task = _Task(producer)
    with pytest.raises(CheckpointFailed, match="commit failed") as failed:
        cp.checkpoint([task])  # type: ignore[list-item]
    assert not failed.value.fatal
    assert ("produce", CHANGELOG, POSITION_KEY) in events, "changelogs were written and flushed"
    assert task.stored == [] and task.committed_position is None
