"""A worker over topic ranges (`bounded:` sources, `processor run --start/--end`): where each
bounded partition starts, where it stops, and when the whole run is over.

- start: a partition the group has no committed offset for starts at its range start; a
  committed offset wins, so a restart resumes where the last checkpoint left off.
- end: records at or past the partition's end are dropped before the task sees them, even
  in the batch that crossed it. A partition whose task position or consumer position reached
  its end is paused and its task ends its input (Task.end_input): the watermark goes to
  END_OF_TIME, every window and timer closes, and the end travels in-band through the
  repartition topics to the downstream tasks.
- done: every task of the worker finished (source tasks at their end, repartition-input
  tasks at END_OF_TIME from every upstream partition, which each upstream task sends after
  all of its records) and committed in a final checkpoint (outputs, changelogs and the end
  offsets in one transaction), and the whole group is at its end: the committed offsets of
  every bounded partition at its end, nothing left after them in the repartition topics
  (whose partitions may reach a member late: their topics were just created). Then the
  worker exits 0. A kill at any point is the usual exactly-once recovery: the restart
  resumes from the committed offsets to the same ends.

The ranges are resolved when the worker starts (runtime/kafka/ranges.py): an `offsets` or
`timestamp` end is the same on a restart; `latest` is the end at *this* start.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from processor.graph import Topology
from processor.runtime.kafka.drain import undrained
from processor.runtime.kafka.ranges import PartitionRange, Ranges, describe, resolve_ranges
from processor.runtime.task_manager import TaskManager
from processor.runtime.tasks.task import Task, TaskState
from processor.spec.bounded import BoundedSpec
from processor.timeutil.watermark import END_OF_TIME

log = logging.getLogger("processor.worker")

TP = tuple[str, int]
CHECK_EVERY_S = 0.5
BoundedTopics = Mapping[str, tuple[str, BoundedSpec]]
"""Topic -> (source name, range): the bounded sources of a run (spec/bound_overrides.py)."""


class BoundedRun:
    """The ranges of a worker's bounded sources and the end of the run."""

    def __init__(self, ranges: Mapping[str, Ranges], internal: list[str],
                 probe_config: dict[str, Any]) -> None:
        """`internal`: the repartition topics; `probe_config`: a group-less consumer's."""
        self.ranges = dict(ranges)  # topic -> partition -> range
        self.internal = internal
        self.probe_config = probe_config
        self._next_check = 0.0  # the group's progress is asked at most every CHECK_EVERY_S
        self._next_log = 0.0
        self._started = time.monotonic()
        self._records: dict[TP, int] = {}  # records let through, by partition
        self._dropped = 0  # records fetched at or past an end

    @classmethod
    def resolve(cls, admin: AdminClient, bounded: BoundedTopics, topology: Topology,
                probe_config: dict[str, Any]) -> BoundedRun:
        """Resolve every bounded topic's ranges (`bounded`: topic -> (source, range)); the
        topology's other stream sources keep the run going (warned)."""
        unbounded = [s.source.topic for s in topology.subtopologies
                     if not s.source.internal and s.source.topic not in bounded]
        ranges = {topic: resolve_ranges(admin, source, topic, spec)
                  for topic, (source, spec) in bounded.items()}
        for topic, r in ranges.items():
            log.info("bounded source range", extra={
                "source": bounded[topic][0], "topic": topic, "ranges": describe(r),
                "records": sum(x.end - x.start for x in r.values())})
        if unbounded:
            log.warning("some stream sources are not bounded: the run will not end by itself",
                        extra={"topics": unbounded})
        internal = [s.source.topic for s in topology.subtopologies if s.source.internal]
        return cls(ranges, internal, probe_config)

    def range_of(self, topic: str, partition: int) -> PartitionRange | None:
        r = self.ranges.get(topic)
        return None if r is None else r.get(partition)

    def start_at(self, topic: str, partition: int) -> int | None:
        """Where a partition without a committed offset starts (None: not bounded)."""
        r = self.range_of(topic, partition)
        return None if r is None else r.start

    def within(self, tp: TP, messages: list) -> list:
        """The messages of one partition's batch below its end (the batch may cross it)."""
        r = self.range_of(*tp)
        if r is None:
            return messages
        if messages and messages[-1].offset() >= r.end:
            kept = [m for m in messages if m.offset() < r.end]
            self._dropped += len(messages) - len(kept)
            messages = kept
        self._records[tp] = self._records.get(tp, 0) + len(messages)
        return messages

    def done(self, manager: TaskManager, consumer: Consumer, commit: Callable[[], None]) -> bool:
        """A turn of the worker's loop: end the partitions at their end; once every task is
        finished, `commit` (the final checkpoint). False while work is left, or when the
        checkpoint failed (the tasks reopened and finish again from the committed state)."""
        # a worker holding no partition waits: those of members that end come to it
        if not self.step(manager.tasks, consumer,
                         ready=bool(manager.tasks) and not manager.restoring):
            return False
        commit()
        if any(t.has_progress or t.state is not TaskState.RUNNING
               for t in manager.tasks.values()):
            return False
        now = time.monotonic()
        if now < self._next_check:
            return False
        self._next_check = now + CHECK_EVERY_S
        left = self._group_left(consumer)
        if left:
            if now >= self._next_log:
                self._next_log = now + 10
                log.info("this worker's tasks are finished; waiting for the group's other "
                         "partitions to reach their end", extra={"partitions": left[:20]})
            return False
        log.info("bounded run finished", extra=self.summary(manager.tasks))
        return True

    def _group_left(self, consumer: Consumer) -> list[str]:
        """The group's partitions not at their end, whoever holds them (a repartition topic's
        may not even be assigned yet, its topic just created): a bounded one committed below
        its end, a repartition one with a record after the group's committed offset."""
        tps = [TopicPartition(t, p) for t, r in self.ranges.items() for p in r]
        try:
            committed = consumer.committed(tps, timeout=10)
        except KafkaException as exc:
            return [f"(committed offsets: {exc.args[0].str()})"]
        left = [f"{tp.topic}[{tp.partition}]" for tp in committed
                if tp.offset < self.ranges[tp.topic][tp.partition].end]
        if not left and self.internal:
            probe = Consumer(self.probe_config)
            try:
                left = undrained(consumer, probe, self.internal, earliest=True)
            finally:
                probe.close()
        return left

    def step(self, tasks: Mapping[TP, Task], consumer: Consumer, *, ready: bool) -> bool:
        """End the input of bounded partitions that reached their end; True when every task
        is finished (`ready`: the worker holds tasks and every one of them started)."""
        if not ready:
            return False
        reached = self._reached(tasks, consumer)
        if reached:
            consumer.pause([TopicPartition(*tp) for tp in reached])
            for tp, end in reached.items():
                tasks[tp].end_input(end)
                log.info("bounded source partition ended", extra={
                    "topic": tp[0], "partition": tp[1], "offset": tasks[tp].position,
                    "end": end})
        return all(self._finished(tp, task) for tp, task in tasks.items())

    def _reached(self, tasks: Mapping[TP, Task], consumer: Consumer) -> dict[TP, int]:
        """Running bounded tasks whose input is at its end: by the task's position (records
        processed), else by the consumer's, which moves past transaction markers."""
        open_: dict[TP, int] = {}
        for tp, task in tasks.items():
            r = self.range_of(*tp)
            if r is not None and task.state is TaskState.RUNNING and not task.input_ended:
                open_[tp] = r.end
        if not open_:
            return {}
        reached = {tp: end for tp, end in open_.items() if self._at_end(tasks[tp], tp, end)}
        rest = [TopicPartition(*tp) for tp in open_ if tp not in reached]
        if rest:
            for p in consumer.position(rest):
                tp = (p.topic, p.partition)
                if p.offset >= open_[tp]:
                    reached[tp] = open_[tp]
        return reached

    def _at_end(self, task: Task, tp: TP, end: int) -> bool:
        if task.position is None:  # started at the range start, nothing processed yet
            return self.ranges[tp[0]][tp[1]].empty
        return task.position >= end

    def _finished(self, tp: TP, task: Task) -> bool:
        if task.state is not TaskState.RUNNING:
            return False
        if self.range_of(*tp) is not None:
            return task.input_ended
        return task.sub.source.internal and task.watermark >= END_OF_TIME

    def summary(self, tasks: Mapping[TP, Task]) -> dict[str, object]:
        """The run's last log line: what was read and where each partition ended."""
        return {"seconds": round(time.monotonic() - self._started, 3),
                "records": sum(self._records.values()),
                "dropped_past_end": self._dropped,
                "ended": {f"{t}[{p}]": task.position for (t, p), task in sorted(tasks.items())
                          if self.range_of(t, p) is not None}}
