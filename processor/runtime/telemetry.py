"""What the worker tells the outside: metrics, health, readiness and progress.

Kept apart from the loop and the checkpoint so that neither reads like bookkeeping: the loop
reports each partition batch it processed (`processed`), and after every checkpoint the
counters the collector and the tasks gathered since the last one are exported (`export`).
/healthz is alive while the loop turns; /readyz is ready once the group has assigned
partitions and every task has restored. A progress line goes to the log every ten seconds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from processor.observability.metrics import Metrics
from processor.observability.progress import ProgressBar
from processor.runtime.config import WorkerConfig
from processor.runtime.task_manager import TaskManager
from processor.runtime.tasks.task import Task, TaskState
from processor.state.memory import StateMemory
from processor.timeutil.watermark import NO_WATERMARK

log = logging.getLogger("processor.worker")  # the worker's log lines, as before the split


class Telemetry:
    def __init__(self, metrics: Metrics, config: WorkerConfig, task_manager: TaskManager,
                 consumer: Consumer, produced: dict[str, int], *,
                 last_turn: Callable[[], float], stopping: Callable[[], bool],
                 started_at: float, progress_bar: ProgressBar | None = None,
                 memory: StateMemory | None = None) -> None:
        """`produced`: records written per topic since the last export (the collector's);
        `last_turn()`: when the loop last turned; `stopping()`: the worker is shutting down;
        `progress_bar`: restore progress on a terminal (CLI)."""
        self.metrics = metrics
        self.config = config
        self.task_manager = task_manager
        self.consumer = consumer
        self.produced = produced
        self._last_turn = last_turn
        self._stopping = stopping
        self.progress_bar = progress_bar
        self.memory = memory
        metrics.state_memory_budget.set(memory.budget if memory is not None else 0)
        self.records_processed = 0
        self._consumed = metrics.records_consumed
        self._observed_at = 0.0  # last lag / store-size observation
        self._trims_exported = 0  # memory.trims already counted in the metric
        self._lag_labels: set[tuple[str, str]] = set()  # partitions with a lag series
        self._started_at = started_at
        self._progress_mark = (started_at, 0)

    # -- metrics ------------------------------------------------------------------------------

    def processed(self, topic: str, records: int, last_time: int) -> None:
        """A task processed a batch of `records` from `topic`, the last stamped `last_time`."""
        self._consumed.labels(topic).inc(records)
        self.records_processed += records
        if last_time > 0:
            self.metrics.end_to_end_latency.observe(max(0.0, time.time() - last_time / 1000))

    def export(self) -> None:
        """After a checkpoint: records produced, dead letters, skipped and late records, cache
        trims since the last one; watermarks; lag and store sizes (every few seconds); tasks per state."""
        produced = self.produced
        for topic, n in produced.items():
            self.metrics.records_produced.labels(topic).inc(n)
        produced.clear()
        if self.memory is not None and self.memory.trims > self._trims_exported:
            self.metrics.cache_trims.inc(self.memory.trims - self._trims_exported)
            self._trims_exported = self.memory.trims
        tasks = self.task_manager.tasks
        for task in tasks.values():
            if task.failures:
                for (policy, step, error), n in task.failures.items():
                    counter = (self.metrics.dead_letters if policy == "dlq"
                               else self.metrics.skipped_records)
                    counter.labels(task.topic, step, error).inc(n)
                task.failures.clear()
            for step, (matches, timeouts) in task.pattern_counts.items():
                self.metrics.pattern_matches.labels(task.topic, step).inc(matches)
                self.metrics.pattern_timeouts.labels(task.topic, step).inc(timeouts)
            task.pattern_counts.clear()
            if task.late_records:
                self.metrics.late_records.labels(task.topic).inc(task.late_records)
                task.late_records = 0
            if task.clock.current != NO_WATERMARK:
                self.metrics.watermark.labels(task.topic, str(task.partition)).set(
                    task.clock.current / 1000)
        self._observe_partitions()
        for state in TaskState:
            self.metrics.tasks.labels(state.value).set(
                sum(1 for t in tasks.values() if t.state is state))

    def _observe_partitions(self, every_s: float = 5.0) -> None:
        """Consumer lag per input partition (from the last fetch: no broker call) and local
        store sizes (RocksDB's estimates), every few seconds."""
        now = time.monotonic()
        if now - self._observed_at < every_s:
            return
        self._observed_at = now
        tasks = self.task_manager.tasks
        owned = {(topic, str(partition)) for topic, partition in tasks}
        for labels in self._lag_labels - owned:  # revoked: no stale lag series
            self.metrics.consumer_lag.remove(*labels)
        self._lag_labels &= owned
        for (topic, partition), task in list(tasks.items()):
            if task.state is not TaskState.RUNNING or task.position is None:
                continue
            try:
                _, high = self.consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                              cached=True)
            except KafkaException:
                continue
            if high is not None and high >= 0:
                self.metrics.consumer_lag.labels(topic, str(partition)).set(max(0, high - task.position))
                self._lag_labels.add((topic, str(partition)))
            for name, store in task.stores.items():
                keys, size = store.stats()
                self.metrics.state_keys.labels(name, str(partition)).set(keys)
                self.metrics.state_bytes.labels(name, str(partition)).set(size)
        if self.memory is not None:
            for part, size in self.memory.usage().items():
                self.metrics.state_memory.labels(part).set(size)

    def restore_progress(self, progress: list[tuple[str, int, int, int | None]]) -> None:
        """The restorer's progress after every chunk: gauges and the progress bar."""
        gauge = self.metrics.restore_remaining
        for store, partition, restored, total in progress:
            gauge.labels(store, str(partition)).set(max(0, (total or restored) - restored))
        if self.progress_bar is not None:
            done = sum(p[2] for p in progress)
            total = sum(p[3] or p[2] for p in progress)
            self.progress_bar.update(done, total, f"({len(progress)} store partitions)")

    def task_restored(self, task: Task) -> None:
        for name in task.stores:
            self.metrics.restore_remaining.labels(name, str(task.partition)).set(0)
        if self.progress_bar is not None and not self.task_manager.restorer.busy:
            self.progress_bar.finish("restore complete")

    # -- health and readiness -----------------------------------------------------------------

    def health(self) -> tuple[int, dict[str, Any]]:
        """Alive while the loop turns; a stuck loop (a hung call, a deadlock) fails it."""
        idle = time.monotonic() - self._last_turn()
        ok = idle * 1000 < self.config.liveness_timeout_ms
        return (200 if ok else 503), {"status": "ok" if ok else "stuck",
                                      "seconds_since_loop": round(idle, 3)}

    def readiness(self) -> tuple[int, dict[str, Any]]:
        """Ready once the group has assigned partitions and every task has restored."""
        tasks = self.task_manager.tasks
        assigned_once, stopping = self.task_manager.assigned_once, self._stopping()
        restoring = sorted(t.id for t in list(tasks.values()) if t.state is TaskState.RESTORING)
        ready = assigned_once and not restoring and not stopping
        reason = ("stopping" if stopping else f"restoring {len(restoring)} task(s)"
                  if restoring else "waiting for an assignment" if not assigned_once
                  else "processing")
        return (200 if ready else 503), {"ready": ready, "reason": reason,
                                         "tasks": len(tasks), "restoring": restoring}

    # -- progress log -------------------------------------------------------------------------

    def log_progress(self, now: float, every_s: float = 10.0) -> None:
        """A progress line every ten seconds: totals, rate, task states, per-task offsets."""
        last_t, last_n = self._progress_mark
        if now - last_t < every_s:
            return
        if not self.task_manager.assigned_once:
            hint = ("a broker without KIP-848 (Apache Kafka < 4.0, Tansu: dev-broker's default) "
                    "never answers group_protocol consumer: set group_protocol: classic "
                    "(PROCESSOR_GROUP_PROTOCOL=classic)" if self.config.group_protocol == "consumer"
                    else "is another member still holding the partitions?")
            log.warning("waiting for an assignment", extra={
                "waited_s": round(now - self._started_at), "group_protocol":
                self.config.group_protocol, "hint": hint})
        self._progress_mark = (now, self.records_processed)
        tasks = self.task_manager.tasks
        log.info("progress", extra={
            "records": self.records_processed,
            "records_per_s": round((self.records_processed - last_n) / (now - last_t)),
            "tasks_running": sum(t.state is TaskState.RUNNING for t in tasks.values()),
            "tasks_restoring": sum(t.state is TaskState.RESTORING for t in tasks.values()),
            "offsets": {f"{t.topic}[{t.partition}]": t.committed_position
                        for t in tasks.values()}})
