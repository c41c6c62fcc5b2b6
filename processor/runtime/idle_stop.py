"""`--stop-when-idle`: end a run once its input has been quiet for a while and the group drained.

Idle alone is not enough: another member may own input not yet read, or a crashed member may
hold partitions until its session expires; a group-less probe compares the group's committed
offsets with the ends (runtime/kafka/drain.py). When the run ends this way, what stayed open
(windows, timers) and which partitions held the watermark back is logged and kept for the CLI
(runtime/tasks/open_work.py). The worker owns the loop; this part gets what it needs as
arguments and never imports the worker.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from confluent_kafka import Consumer

from processor.graph import Topology
from processor.runtime.config import WorkerConfig
from processor.runtime.kafka.clients import restore_consumer_config
from processor.runtime.kafka.drain import undrained
from processor.runtime.task_manager import TaskManager
from processor.runtime.tasks.open_work import OpenWork, collect
from processor.runtime.tasks.task import Task

log = logging.getLogger("processor.worker")


class IdleStop:
    def __init__(self, idle_ms: int, config: WorkerConfig, topology: Topology) -> None:
        self.idle_ms = idle_ms
        self.config, self.topology = config, topology
        self._probe: Consumer | None = None  # reads the group's leftovers
        self.open_work: OpenWork | None = None  # set when the run ended idle (the CLI prints it)

    def idle(self, idle_s: float, tasks: TaskManager) -> bool:
        return bool(tasks.tasks) and not tasks.restoring and idle_s * 1000 >= self.idle_ms

    def drained(self, consumer: Consumer) -> bool:
        """Every input partition of the group is processed, including those still held by a
        crashed member whose session has not expired."""
        if self._probe is None:
            self._probe = Consumer(restore_consumer_config(self.config))
        left = undrained(consumer, self._probe, self.topology.source_topics,
                         earliest=self.config.auto_offset_reset == "earliest")
        if left:
            log.info("idle, but the group has input left (another member owns it, or owned it "
                     "and crashed): not stopping yet", extra={"partitions": left})
        return not left

    def report(self, tasks: Iterable[Task]) -> None:
        """The run's last word: what stayed open and which partitions hold it."""
        self.open_work = collect(tasks)
        log.info(self.open_work.message(), extra=self.open_work.fields())

    def close(self) -> None:
        if self._probe is not None:
            self._probe.close()
