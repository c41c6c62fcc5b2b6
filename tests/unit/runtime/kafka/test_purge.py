"""Repartition purge scheduling (runtime/kafka/purge.py) and its hook in the checkpointer, without a
broker: a fake admin client whose DeleteRecords futures the test completes by hand."""

from __future__ import annotations

import logging
from concurrent.futures import Future
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from processor.observability.metrics import Metrics
from processor.runtime.durability.checkpoint import Checkpointer, CheckpointFailed
from processor.runtime.kafka.purge import NO_ANSWER_LIMIT, RepartitionPurger
from processor.runtime.tasks.task import TaskState

REP = "app-totals-repartition"


class FakeAdmin:
    def __init__(self) -> None:
        self.requests: list[list[tuple[str, int, int]]] = []
        self.futures: dict[TopicPartition, Future[Any]] = {}

    def delete_records(self, tps: list[TopicPartition], **_: Any) -> dict[TopicPartition, Future[Any]]:
        self.requests.append([(tp.topic, tp.partition, tp.offset) for tp in tps])
        self.futures = {tp: Future() for tp in tps}
        return self.futures

    def succeed(self) -> None:
        for tp, fut in self.futures.items():
            fut.set_result(SimpleNamespace(low_watermark=tp.offset))

    def fail(self, code: int) -> None:
        for fut in self.futures.values():
            fut.set_exception(KafkaException(KafkaError(code)))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def tps(*offsets: tuple[str, int, int]) -> list[TopicPartition]:
    return [TopicPartition(t, p, o) for t, p, o in offsets]


@pytest.fixture
def setup() -> tuple[RepartitionPurger, FakeAdmin, Clock]:
    admin, clock = FakeAdmin(), Clock()
    return RepartitionPurger(admin, [REP], 30.0, clock=clock), admin, clock


def test_purges_committed_repartition_offsets_once_per_interval(setup):
    purger, admin, clock = setup
    purger.committed_offsets(tps((REP, 0, 10), (REP, 1, 5), ("orders", 0, 99)))
    assert admin.requests == []  # the first interval has not passed
    clock.now += 30
    purger.committed_offsets(tps((REP, 0, 20)))
    # the latest committed offset per repartition partition; source topics are never purged
    assert admin.requests == [[(REP, 0, 20), (REP, 1, 5)]]
    admin.succeed()
    clock.now += 10
    purger.committed_offsets(tps((REP, 0, 30)))
    assert len(admin.requests) == 1  # not due yet
    clock.now += 20
    purger.committed_offsets([])  # nothing committed this time: a due purge still goes out
    assert admin.requests[-1] == [(REP, 0, 30)]  # partition 1 did not advance: not asked again


def test_one_request_at_a_time_and_answers_read_without_blocking(setup):
    purger, admin, clock = setup
    clock.now += 30
    purger.committed_offsets(tps((REP, 0, 10)))
    clock.now += 60
    purger.committed_offsets(tps((REP, 0, 40)))
    assert len(admin.requests) == 1  # the first is still in flight
    admin.succeed()
    purger.committed_offsets([])
    assert admin.requests[-1] == [(REP, 0, 40)]
    assert purger.purged == {(REP, 0): 10}


def test_interval_zero_purges_after_every_checkpoint():
    admin = FakeAdmin()
    purger = RepartitionPurger(admin, [REP], 0.0)
    for offset in (5, 9):
        purger.committed_offsets(tps((REP, 0, offset)))
        admin.succeed()
    assert admin.requests == [[(REP, 0, 5)], [(REP, 0, 9)]]


def test_offset_zero_and_topologies_without_repartition_topics_send_nothing():
    admin = FakeAdmin()
    purger = RepartitionPurger(admin, [REP], 0.0)
    purger.committed_offsets(tps((REP, 0, 0)))
    none = RepartitionPurger(admin, [], 0.0)
    none.committed_offsets(tps((REP, 0, 10)))
    assert admin.requests == [] and not none.enabled


def test_a_failure_is_logged_with_its_partitions_and_retried(setup, caplog):
    purger, admin, clock = setup
    clock.now += 30
    purger.committed_offsets(tps((REP, 0, 10), (REP, 3, 7)))
    admin.fail(KafkaError.NOT_LEADER_FOR_PARTITION)
    with caplog.at_level(logging.WARNING, "processor.purge"):
        purger.committed_offsets([])
    [record] = caplog.records
    assert record.msg == "repartition purge failed; retrying at the next interval"
    assert record.partitions == [f"{REP}[0]@10", f"{REP}[3]@7"]
    clock.now += 30
    purger.committed_offsets([])
    assert len(admin.requests) == 2 and purger.enabled


def test_unsupported_is_reported_once_and_never_asked_again(setup, caplog):
    purger, admin, clock = setup
    clock.now += 30
    purger.committed_offsets(tps((REP, 0, 10)))
    admin.fail(KafkaError.UNSUPPORTED_VERSION)
    with caplog.at_level(logging.WARNING, "processor.purge"):
        for _ in range(5):
            clock.now += 30
            purger.committed_offsets(tps((REP, 0, 20)))
    assert len(admin.requests) == 1
    assert [r.msg for r in caplog.records] == [
        "repartition topics cannot be purged on this broker; not trying again "
        "(they keep every record: they are created without time retention)"]


def test_a_broker_that_drops_the_connection_every_time_is_given_up_on(setup, caplog):
    """Tansu closes the connection on DeleteRecords (then finds no leader): after a few such
    answers, and never a success, one warning and no more requests."""
    purger, admin, clock = setup
    codes = iter([KafkaError._TRANSPORT, KafkaError._NOENT] * NO_ANSWER_LIMIT)
    with caplog.at_level(logging.INFO, "processor.purge"):
        for _ in range(NO_ANSWER_LIMIT + 2):
            clock.now += 30
            purger.committed_offsets(tps((REP, 0, 10)))
            if admin.futures and not all(f.done() for f in admin.futures.values()):
                admin.fail(next(codes))
    assert len(admin.requests) == NO_ANSWER_LIMIT and not purger.enabled
    assert [r.levelname for r in caplog.records] == ["INFO"] * (NO_ANSWER_LIMIT - 1) + ["WARNING"]


def test_network_trouble_after_a_success_does_not_stop_purging(setup):
    purger, admin, clock = setup
    clock.now += 30
    purger.committed_offsets(tps((REP, 0, 10)))
    admin.succeed()
    for offset in range(20, 20 + 10 * (NO_ANSWER_LIMIT + 2), 10):
        clock.now += 30
        purger.committed_offsets(tps((REP, 0, offset)))
        admin.fail(KafkaError._TRANSPORT)
    assert purger.enabled and len(admin.requests) == NO_ANSWER_LIMIT + 3


# -- the hook in the checkpointer: only offsets whose commit returned ----------------------

class FakeTask:
    def __init__(self, topic: str, partition: int, position: int) -> None:
        self.topic, self.partition, self.position = topic, partition, position
        self.state, self.has_progress = TaskState.RUNNING, True
        self.changelogs: dict[str, str] = {}
        self.pending: dict[str, dict[bytes, bytes]] = {}

    def flush(self) -> None:
        pass

    def position_record(self) -> None:
        return None

    def committed(self, changelog_next: dict[str, int]) -> None:
        self.has_progress = False


class FakeConsumer:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        if self.fail:
            raise KafkaException(KafkaError(KafkaError.REBALANCE_IN_PROGRESS))


class FakeProducer:
    def flush(self, timeout: float) -> int:
        return 0


def checkpointer(consumer: FakeConsumer, seen: list[list[tuple[str, int, int]]]) -> Checkpointer:
    cp = Checkpointer(FakeProducer(), consumer, exactly_once=False,  # type: ignore[arg-type]
                      metrics=Metrics(), delivery_errors=[])
    cp.on_committed = lambda offsets: seen.append([(o.topic, o.partition, o.offset)
                                                   for o in offsets])
    return cp


def test_checkpointer_reports_committed_offsets_after_the_commit():
    seen: list[list[tuple[str, int, int]]] = []
    cp = checkpointer(FakeConsumer(), seen)
    task = FakeTask(REP, 2, 42)
    assert cp.checkpoint([task]) == 1  # type: ignore[list-item]
    assert seen == [[(REP, 2, 42)]]
    assert cp.checkpoint([task]) == 0  # type: ignore[list-item]
    assert seen[-1] == []  # nothing committed, but the purge gets its turn


def test_checkpointer_reports_nothing_when_the_commit_fails():
    seen: list[list[tuple[str, int, int]]] = []
    cp = checkpointer(FakeConsumer(fail=True), seen)
    with pytest.raises(CheckpointFailed):
        cp.checkpoint([FakeTask(REP, 0, 7)])  # type: ignore[list-item]
    assert seen == []
