"""The checkpoint: make outputs, changelog writes and consumed offsets durable together.

exactly_once: everything since the last checkpoint is in one open transaction; the
checkpoint adds the changelog writes and the consumed offsets
(`send_offsets_to_transaction`, fenced by the consumer group generation) and commits.

at_least_once: outputs are flushed first, then the changelog writes (each ending with a
position record), then offsets are committed. A crash in between can duplicate outputs but
never loses them, and the position records keep state exactly-once.

In both modes local RocksDB is written only after the commit returned (see state/store.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from itertools import chain, islice
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from processor.observability.metrics import Metrics
from processor.runtime import faults
from processor.runtime.kafka.produce import produce_all, produce_when_room
from processor.runtime.tasks.task import Task, TaskState
from processor.state import LAYOUT_KEY, POSITION_KEY
from processor.state.memory import StateMemory

log = logging.getLogger("processor.checkpoint")


def kafka_error(exc: BaseException) -> KafkaError | None:
    """The KafkaError behind `exc`. A fatal error raised while a delivery callback runs
    reaches Python as SystemError with the KafkaException as its cause."""
    while exc is not None:
        if isinstance(exc, KafkaException) and isinstance(exc.args[0], KafkaError):
            return exc.args[0]
        exc = exc.__cause__ or exc.__context__
    return None


def is_fatal(err: KafkaError) -> bool:
    """Fatal for the producer: fenced, or a produce() refused because the instance is dead
    (librdkafka then reports the generic _FATAL code, whose `fatal()` flag is not set)."""
    return err.fatal() or err.code() in (KafkaError._FATAL, KafkaError._FENCED)


class CheckpointFailed(Exception):
    """The checkpoint did not commit. `fatal`: the producer is fenced or broken for good."""

    def __init__(self, message: str, *, fatal: bool) -> None:
        self.fatal = fatal
        super().__init__(message)


COMMIT_BUDGET_S = 25.0
"""How long an exactly-once checkpoint may wait for Kafka (offsets into the transaction, then
the commit, retried while retriable) before it gives up: the worker then reopens its tasks from
the last commit, and its loop keeps turning, well inside a liveness probe's patience (the
worker's own `liveness_timeout_ms` defaults to 60 s). Giving up is safe: replacing the producer
completes or aborts the transaction on the broker before the tasks restore."""
SEND_OFFSETS_TIMEOUT_S = 10.0
"""librdkafka's own timeout for send_offsets_to_transaction."""
SEND_OFFSETS_GRACE_S = 5.0
"""How much longer the call gets before the checkpoint stops waiting for it (send_offsets)."""


def send_offsets(producer: Producer, offsets: list[TopicPartition], group_metadata: Any) -> None:
    """send_offsets_to_transaction with a deadline of our own. librdkafka 2.16 can block in it
    far past its timeout once the group coordinator went away, e.g. across a broker restart
    (confluentinc/librdkafka#5456 and #5511; seen by the fault campaign as a worker stuck in
    a checkpoint). The call runs in a thread: past the deadline the checkpoint fails, the
    worker replaces the producer and the stuck call keeps the old one alive until it returns."""
    outcome: list[BaseException | None] = []

    def call() -> None:
        try:
            producer.send_offsets_to_transaction(offsets, group_metadata, SEND_OFFSETS_TIMEOUT_S)
        except BaseException as exc:  # handed to the caller's thread
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=call, name="send-offsets", daemon=True)
    thread.start()
    deadline = SEND_OFFSETS_TIMEOUT_S + SEND_OFFSETS_GRACE_S
    thread.join(deadline)
    if not outcome:
        raise CheckpointFailed(
            f"send_offsets_to_transaction did not return within {deadline:g}s "
            "(the group coordinator is unreachable or the client lost track of it)", fatal=False)
    if outcome[0] is not None:
        raise outcome[0]


class Checkpointer:
    def __init__(self, producer: Producer, consumer: Consumer, *, exactly_once: bool,
                 metrics: Metrics, delivery_errors: list[KafkaError],
                 memory: StateMemory | None = None) -> None:
        self.producer = producer
        self.memory = memory
        self.consumer = consumer
        self.exactly_once = exactly_once
        self.metrics = metrics
        self.delivery_errors = delivery_errors
        self._changelog_last: dict[tuple[str, int], int] = {}
        # called after every checkpoint with the offsets it committed (empty when it had
        # nothing to commit), only once the commit returned: the repartition purge
        self.on_committed: Callable[[list[TopicPartition]], None] | None = None
        # at-least-once only, before the changelog writes: a reason to doubt this member still
        # owns its partitions (the worker's _membership_doubt), or None
        self.membership_doubt: Callable[[], str | None] | None = None

    def _changelog_delivered(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            self.delivery_errors.append(err)
            return
        key = (msg.topic(), msg.partition())
        if msg.offset() > self._changelog_last.get(key, -1):
            self._changelog_last[key] = msg.offset()

    def _write_changelogs(self, task: Task) -> None:
        """Produce each store's changed entries, then its layout (first time) and the task's
        position record. Only the last record per changelog partition asks for a delivery
        report of its own (its offset is the restore point): a failed delivery of the others
        fails the transaction (exactly_once) or reaches the producer's default report
        (at_least_once, `Worker._on_output_delivery`), so one Python call per changed key is
        saved on a checkpoint that writes many."""
        position = task.position_record()
        for store, topic in task.changelogs.items():
            writes = task.pending.get(store, {})
            tail = []
            layout = task.layout_record(store)
            if layout is not None:  # first checkpoint on this state: its layout (layouts.py)
                tail.append((LAYOUT_KEY, layout))
            if position is not None:  # None: the task has not read any input yet
                tail.append((POSITION_KEY, position))
            records = chain(writes.items(), tail)
            unreported = max(0, len(writes) + len(tail) - 1)
            produce_all(self.producer, topic, islice(records, unreported), task.partition)
            for key, value in records:  # the last one
                produce_when_room(self.producer, topic, value, key, partition=task.partition,
                                  on_delivery=self._changelog_delivered)
            self.metrics.changelog_records.labels(store).inc(len(writes) + (position is not None))
            self.metrics.changelog_bytes.labels(store).inc(
                sum(len(k) + len(v or b"") for k, v in writes.items())
                + (len(position) + len(POSITION_KEY) if position is not None else 0))

    def _flush(self, what: str) -> None:
        try:
            remaining = self.producer.flush(60)
        except Exception as exc:
            err = kafka_error(exc)
            if err is None:
                raise
            raise CheckpointFailed(f"flush failed ({what}): {err.str()}", fatal=is_fatal(err)) from None
        if remaining:
            raise CheckpointFailed(f"{remaining} records not delivered within 60s ({what})",
                                   fatal=False)
        if self.delivery_errors:
            errs, self.delivery_errors[:] = list(self.delivery_errors), []
            raise CheckpointFailed(f"delivery failed ({what}): {errs[0].str()}"
                                   + (f" and {len(errs) - 1} more" if len(errs) > 1 else ""),
                                   fatal=is_fatal(errs[0]))

    def checkpoint(self, tasks: list[Task]) -> int:
        """Commit every running task that made progress; returns how many were committed.

        Any Kafka error on the way (a produce refused by a fenced producer, a failed flush or
        commit) becomes CheckpointFailed: nothing of this checkpoint reached RocksDB.
        """
        tasks = [t for t in tasks if t.state is TaskState.RUNNING and t.has_progress]
        if not tasks:
            if self.on_committed is not None:
                self.on_committed([])
            return 0
        try:
            return self._checkpoint(tasks)
        except CheckpointFailed:
            self.metrics.checkpoints.labels("failed").inc()
            raise
        except Exception as exc:
            err = kafka_error(exc)
            if err is None:
                raise
            self.metrics.checkpoints.labels("failed").inc()
            raise CheckpointFailed(f"checkpoint failed: {err.str()}", fatal=is_fatal(err)) from None

    def _checkpoint(self, tasks: list[Task]) -> int:
        started = time.perf_counter()
        self._changelog_last.clear()
        for task in tasks:
            task.flush()
        faults.point("checkpoint.after_flush")
        if not self.exactly_once:
            self._flush("outputs")
            doubt = self.membership_doubt() if self.membership_doubt is not None else None
            if doubt:  # nothing fences these writes: better replay (outputs may repeat)
                raise CheckpointFailed(doubt, fatal=False)
        for task in tasks:
            self._write_changelogs(task)
        faults.point("checkpoint.after_changelog")
        offsets = [TopicPartition(t.topic, t.partition, t.position) for t in tasks
                   if t.position is not None]
        try:
            if self.exactly_once:
                self._commit_transaction(offsets)
            else:
                self._flush("changelogs")
                faults.point("checkpoint.before_commit")
                if offsets:
                    self.consumer.commit(offsets=offsets, asynchronous=False)
        except CheckpointFailed:
            raise
        except Exception as exc:
            err = kafka_error(exc)
            if err is None:
                raise
            raise CheckpointFailed(f"commit failed: {err.str()}", fatal=is_fatal(err)) from None
        faults.point("checkpoint.after_commit")
        if self.exactly_once:
            self.producer.poll(0)  # serve any delivery reports commit_transaction left queued
        for task in tasks:
            # a store whose last changelog offset is unknown keeps its old restore point: safe
            task.committed({store: self._changelog_last[(topic, task.partition)] + 1
                            for store, topic in task.changelogs.items()
                            if (topic, task.partition) in self._changelog_last})
        if self.memory is not None:  # the write caches back inside the budget
            self.memory.enforce(op for task in tasks for _, _, op in task.stateful)
        if self.on_committed is not None:
            self.on_committed(offsets)
        elapsed = time.perf_counter() - started
        self.metrics.checkpoint_seconds.observe(elapsed)
        self.metrics.checkpoints.labels("ok").inc()
        if self.exactly_once:
            self.metrics.transactions.labels("committed").inc()
        log.debug("checkpoint committed", extra={
            "tasks": len(tasks), "seconds": round(elapsed, 4),
            "offsets": {f"{o.topic}[{o.partition}]": o.offset for o in offsets}})
        return len(tasks)

    def _commit_transaction(self, offsets: list[TopicPartition]) -> None:
        producer = self.producer
        deadline = time.monotonic() + COMMIT_BUDGET_S
        if offsets:
            send_offsets(producer, offsets, self.consumer.consumer_group_metadata())
        faults.point("checkpoint.before_commit")
        while True:
            left = deadline - time.monotonic()
            try:
                producer.commit_transaction(max(1.0, left))
                break
            except Exception as exc:
                err = kafka_error(exc)
                if err is None:
                    raise
                if err.retriable() and deadline - time.monotonic() > 1.0:
                    log.warning("transaction commit retry", extra={"error": err.str()})
                    continue
                if err.retriable():
                    raise CheckpointFailed(
                        f"transaction not committed within {COMMIT_BUDGET_S:g}s: {err.str()}",
                        fatal=False) from None
                raise  # the worker replaces the producer, which aborts this transaction
        self.delivery_errors.clear()
        producer.begin_transaction()
