"""The worker's tasks: which exist, and how they open, restore, start and close.

The group's rebalance callbacks land here. Rebalances are incremental (KIP-848 with the
broker's `range` assignor, or `cooperative-sticky` under `group_protocol: classic`): a
rebalance names only the partitions that move, so the other tasks keep processing through it.
On revoke all tasks are checkpointed (one transaction) and the revoked ones closed clean; on
assign a task per new partition starts restoring with its input paused: its stores catch up
from their changelogs (runtime/durability/restore.py), its per-task tables from their topics
(runtime/durability/tables.py), and once all are done its input is sought to the first offset its state
does not hold and resumed. Under exactly-once a restore starts only once the group's committed
offsets of the partition are stable (`restore_when_stable`). Model: Kafka Streams' TaskManager
(handleAssignment, handleRevocation, handleLostAll).

What this needs of the worker (a checkpoint, aborting the producer's uncommitted work, a
BuildContext per partition, ...) comes as callbacks: it never imports the worker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaException,
    TopicPartition,
)

from processor.graph import BuildContext, Topology
from processor.graph.layout import state_layout
from processor.observability.metrics import Metrics
from processor.runtime.config import WorkerConfig
from processor.runtime.durability.checkpoint import CheckpointFailed
from processor.runtime.durability.restore import Restorer
from processor.runtime.durability.tables import TableFollower
from processor.runtime.tasks.task import Task, TaskState
from processor.timeutil.watermark import NO_WATERMARK

log = logging.getLogger("processor.worker")  # the worker's log lines, as before the split

TP = tuple[str, int]


class TaskManager:
    def __init__(self, topology: Topology, config: WorkerConfig, consumer: Consumer,
                 restore_consumer: Consumer, tables: TableFollower, metrics: Metrics, *,
                 open_txn_wait_s: float,
                 context_for: Callable[[int], BuildContext],
                 checkpoint: Callable[[list[Task]], int],
                 abort_uncommitted: Callable[[bool], None],
                 on_restored: Callable[[Task], None],
                 on_change: Callable[[], None],
                 touch: Callable[[], None],
                 start_at: Callable[[str, int], int | None] | None = None) -> None:
        """Callbacks: `context_for(partition)` builds a new task's context; `checkpoint(tasks)`
        commits them (CheckpointFailed if not); `abort_uncommitted(fatal)` drops the
        producer's uncommitted work once every task is closed dirty; `on_restored(task)` when
        a task's stores are caught up; `on_change()` after the set of tasks changed; `touch()`
        on activity (an assignment, a task starting) that keeps a bounded run going;
        `start_at(topic, partition)`: where a partition without a committed offset starts
        (a topic range's start, runtime/bounded_run.py; None: auto_offset_reset)."""
        self.topology = topology
        self.config = config
        self.consumer = consumer
        self.tables = tables
        self.metrics = metrics
        # a task starts once its stores *and* its per-task tables are caught up (_ready)
        self.restorer = Restorer(restore_consumer, lambda task: self._ready(task, "stores"),
                                 open_txn_wait_s=open_txn_wait_s)
        self._context_for = context_for
        self._checkpoint = checkpoint
        self._abort_uncommitted = abort_uncommitted
        self._restored_hook = on_restored
        self._on_change = on_change
        self._touch = touch
        self._start_at = start_at or (lambda topic, partition: None)
        self.tasks: dict[TP, Task] = {}
        self._layouts = state_layout(topology).stores  # checked and recorded by each task
        self.assigned_once = False  # the group gave this worker its first assignment: /readyz
        # restoring tasks: what each still waits for ("stores", "table <name>")
        self._waiting: dict[str, set[str]] = {}
        self._failed_start: CheckpointFailed | None = None  # see _on_restored
        self._unstable: list[Task] = []  # new tasks waiting for stable offsets to restore
        self._unstable_logged = 0.0

    @property
    def restoring(self) -> bool:
        """Some task is restoring or waiting for stable offsets to start restoring."""
        return self.restorer.busy or bool(self._unstable)

    def take_failed_start(self) -> CheckpointFailed | None:
        """A task whose input could not start since the last call (see _on_restored)."""
        failed, self._failed_start = self._failed_start, None
        return failed

    # -- rebalance callbacks --------------------------------------------------------------------

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.metrics.rebalances.labels("assign").inc()
        self._touch()
        consumer.incremental_assign(self._range_starts(consumer, partitions))
        self._open_tasks(consumer, partitions)
        self.assigned_once = True
        self._on_change()

    def _range_starts(self, consumer: Consumer, partitions: list[TopicPartition],
                      ) -> list[TopicPartition]:
        """Partitions of topic ranges are assigned at their start, or at the group's committed
        offset (which wins): a seek right after the assignment can lose the race with the
        consumer's own look-up of the committed offset, whose default (auto_offset_reset)
        then overrides it. If the offsets cannot be had now, the seek when the task starts
        remains (its task is held until then)."""
        bounded = [p for p in partitions if self._start_at(p.topic, p.partition) is not None]
        if not bounded:
            return partitions
        try:
            committed = consumer.committed(bounded, timeout=5)
        except KafkaException:
            return partitions
        at = {(c.topic, c.partition): c.offset if c.offset >= 0
              else self._start_at(c.topic, c.partition) for c in committed}
        return [TopicPartition(p.topic, p.partition, at[(p.topic, p.partition)])
                if (p.topic, p.partition) in at else p for p in partitions]

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.metrics.rebalances.labels("revoke").inc()
        try:
            self._checkpoint(list(self.tasks.values()))
        except CheckpointFailed as exc:
            log.error("checkpoint on revoke failed; closing tasks dirty", extra={"error": str(exc)})
            self.reset(consumer, gone=partitions, fatal=exc.fatal)
            return
        for tp in [(p.topic, p.partition) for p in partitions]:
            task = self.tasks.pop(tp, None)
            if task is not None:
                self._close_task(task, dirty=False)
        consumer.incremental_unassign(partitions)
        log.info("partitions revoked", extra={"partitions": _fmt(partitions),
                                              "kept": len(self.tasks)})
        self._on_change()

    def on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.metrics.rebalances.labels("lost").inc()
        log.warning("partitions lost; closing tasks dirty", extra={"partitions": _fmt(partitions)})
        self.reset(consumer, gone=partitions, fatal=False)

    def reset(self, consumer: Consumer, *, gone: list[TopicPartition], fatal: bool) -> None:
        """Uncommitted work is lost (an aborted transaction spans every task): close all tasks
        dirty, let the `gone` partitions go, and reopen the partitions this member keeps —
        they restore their changelog tail and resume at the committed offsets."""
        moved = {(p.topic, p.partition) for p in gone}
        kept = [TopicPartition(t, p) for t, p in self.tasks if (t, p) not in moved]
        self.close_all(dirty=True)
        self._abort_uncommitted(fatal)
        if gone:
            consumer.incremental_unassign(gone)
        if kept:
            for task in self._open_tasks(consumer, kept, msg="tasks reopened"):
                if task.state is TaskState.RUNNING:  # stateless: rewind to the commit now
                    try:
                        self._start_input(task)
                    except KafkaException as exc:  # e.g. NOT_COORDINATOR: see _on_restored
                        self._failed_start = CheckpointFailed(
                            f"cannot start task {task.id}: {exc.args[0].str()}", fatal=False)
                        break
        self._on_change()

    # -- open and restore -----------------------------------------------------------------------

    def _open_tasks(self, consumer: Consumer, partitions: list[TopicPartition], *,
                    msg: str = "partitions assigned") -> list[Task]:
        """A task per newly owned partition, its input paused while it restores."""
        fresh: list[Task] = []
        for topic, partition in sorted((p.topic, p.partition) for p in partitions):
            if (topic, partition) in self.tasks:
                continue
            sub = self.topology.subtopology_for(topic)
            task = Task(self.topology.name, sub, partition, self._context_for(partition),
                        self.config.state_dir, self._layouts)
            self.tasks[(topic, partition)] = task
            fresh.append(task)
            if task.state is TaskState.RUNNING and self._start_at(topic, partition) is not None:
                # stateless over a topic range: held (input paused, no record processed)
                # until sought to its start, outside the rebalance callback (below)
                task.state = TaskState.RESTORING
        held = {t.id for t in fresh if t.state is TaskState.RESTORING and not t.stores
                and not t.tables}
        restoring = [TopicPartition(t.topic, t.partition) for t in fresh
                     if t.state is TaskState.RESTORING]
        if restoring:
            consumer.pause(restoring)
        log.info(msg, extra={"partitions": _fmt(partitions), "restoring": _fmt(restoring),
                             "protocol": self.config.group_protocol})
        for task in fresh:
            if task.state is not TaskState.RESTORING:
                continue
            if self.config.exactly_once or task.id in held:
                self._unstable.append(task)  # restored once its offsets are stable (below)
            else:
                self._restore(task)
        return fresh

    def restore_when_stable(self, timeout: float = 0.5) -> None:
        """Start restoring the new tasks once the group's committed offsets of their partitions
        are stable: no transaction of a previous owner holds offsets for them. A member kicked
        out while stopped can still commit a transaction whose offsets the coordinator took
        before the rebalance; its changelog writes may reach the broker only after our restore
        ended, yet `committed()` (which waits for stable offsets) would return its offsets:
        input skipped, records lost (found by the fault campaign). The fetch waits that
        transaction out (it commits or aborts, at the latest at its timeout), a turn of the
        loop at a time."""
        tasks = [t for t in self._unstable if t.state is TaskState.RESTORING]  # not revoked
        self._unstable = []
        if not tasks:
            return
        try:
            self.consumer.committed([TopicPartition(t.topic, t.partition) for t in tasks],
                                    timeout=timeout)
        except KafkaException as exc:  # unstable (timed out), or no coordinator yet: retry
            self._unstable = tasks
            now = time.monotonic()
            if now - self._unstable_logged > 10:
                self._unstable_logged = now
                log.warning("waiting for stable committed offsets before restoring", extra={
                    "tasks": [t.id for t in tasks], "error": exc.args[0].str()})
            return
        for task in tasks:
            self._restore(task)

    def _restore(self, task: Task) -> None:
        """Stores catch up from their changelogs, per-task tables from their topics (read to
        the end before the first record is joined, then followed); the task starts when all
        are done."""
        waiting = self._waiting[task.id] = set()
        if task.stores:
            waiting.add("stores")
            self.restorer.add(task)
        for name, store in task.tables.items():
            waiting.add(f"table {name}")
            self.tables.add(f"{task.id}/{name}", task.table_topics[name], [task.partition], store,
                            on_ready=lambda task=task, name=name: self._ready(task, f"table {name}"))
        if not waiting:  # nothing to restore (a held task): start at once
            del self._waiting[task.id]
            self._on_restored(task)

    def _ready(self, task: Task, part: str) -> None:
        waiting = self._waiting.get(task.id)
        if waiting is None or task.state is not TaskState.RESTORING:
            return
        waiting.discard(part)
        if not waiting:
            del self._waiting[task.id]
            self._on_restored(task)

    def _on_restored(self, task: Task) -> None:
        """Stores caught up: start the input at the first offset the state does not hold."""
        task.restored()
        self._restored_hook(task)
        self._touch()
        try:
            target = self._start_input(task)
        except KafkaException as exc:
            # found by the fault campaign, each killing the worker: after a broker restart
            # committed() can fail (NOT_COORDINATOR); when a revocation races the end of the
            # restore, the partition's fetcher has stopped and seek() fails (_STATE). Start
            # over from the committed state, as after a failed checkpoint (the loop does it at
            # a safe point); a revoked task then goes with its callback.
            self._failed_start = CheckpointFailed(
                f"cannot start task {task.id}: {exc.args[0].str()}", fatal=False)
            return
        silent = task.silent_upstream()
        log.info("task running", extra={
            "task": task.id, "topic": task.topic, "partition": task.partition,
            "offset": target if target >= 0 else None,
            "watermark": task.watermark if task.watermark != NO_WATERMARK else None,
            **({"upstream_never_heard_from": silent} if silent else {})})

    def _start_input(self, task: Task) -> int:
        """Seek the task's input to the first offset its state does not hold and resume it."""
        tp = TopicPartition(task.topic, task.partition)
        start = task.start_position()
        committed = self.consumer.committed([tp], timeout=30)[0].offset
        if start is not None and start > committed:
            # the changelog is ahead of the group's commit (crash after the changelog write
            # under at-least-once): skip input whose effects are already in state and output
            target = start
            task.position = task.committed_position = start
        elif committed >= 0:
            target = task.position = task.committed_position = committed
        elif (begin := self._start_at(task.topic, task.partition)) is not None:
            target = begin
        else:
            target = OFFSET_BEGINNING if self.config.auto_offset_reset == "earliest" else OFFSET_END
        # always seek: the paused partition must start exactly here, whatever was prefetched
        self.consumer.seek(TopicPartition(task.topic, task.partition, target))
        self.consumer.resume([tp])
        return target

    # -- close ----------------------------------------------------------------------------------

    def _close_task(self, task: Task, *, dirty: bool) -> None:
        if task.state is TaskState.RESTORING:
            self.restorer.remove(task)
            self._waiting.pop(task.id, None)
        for name in task.tables:
            self.tables.remove(f"{task.id}/{name}")
        task.close(dirty=dirty)

    def close_all(self, *, dirty: bool) -> None:
        for task in list(self.tasks.values()):
            self._close_task(task, dirty=dirty)
        self.tasks.clear()

    def assignment(self) -> dict[str, list[int]]:
        """The partitions this worker holds tasks for, by topic."""
        out: dict[str, list[int]] = {}
        for topic, partition in self.tasks:
            out.setdefault(topic, []).append(partition)
        return out


def _fmt(partitions: list[TopicPartition]) -> list[str]:
    return [f"{p.topic}[{p.partition}]" for p in partitions]
