"""A task's event time: its watermark, what the watermark makes due, late records, idleness.

A source partition's watermark follows the event times it reads (max - out-of-orderness); a
repartition input's is the minimum over its upstream partitions, which report theirs in-band
(decode.py reads the reports). After each batch the timed operators (operators/base.py
TimedOperator) close what the watermark passed and fire due event-time timers; between
batches processing-time timers fire and an input partition without records for its
`idle_timeout` goes idle. Late records (and a pattern's timeouts and failed buffered records)
are drained after each of these calls. A task feeding
a repartition topic forwards its watermark there (None while idle) whenever it changes.

The results of a firing run down the chain after the operator that fired: the task passes
that walk in as `run_after` (and `count_late` for late records); failures go to the task's
FailureHandler.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from operator import itemgetter
from typing import Any

import orjson

from processor.graph import BuildContext, SubTopology
from processor.operators import Batch, StepFailed
from processor.operators.base import DeferredInput, ProcessingTimeOperator, TimedOperator
from processor.operators.sink import EmitFailed
from processor.runtime.tasks.chains import StepAt
from processor.runtime.tasks.failures import FailureHandler
from processor.runtime.tasks.open_work import Holdback
from processor.timeutil.watermark import (
    NO_WATERMARK,
    Clock,
    PartitionWatermark,
    UpstreamWatermarks,
)

log = logging.getLogger("processor.task")

RunAfter = Callable[[StepAt[TimedOperator], Batch], None]
"""Run a batch down the chain after the given operator (derived records, not input)."""
CountLate = Callable[[int], None]
"""Add to the task's late-record count (the worker reads and resets it for metrics)."""


class EventTime:
    """The watermark of one task's input and the time-driven calls of its timed operators."""

    def __init__(self, task_id: str, sub: SubTopology, partition: int, ctx: BuildContext,
                 clock: Clock, timed: list[StepAt[TimedOperator]], failures: FailureHandler,
                 run_after: RunAfter, count_late: CountLate) -> None:
        src = sub.source
        self.task_id, self.topic, self.partition = task_id, src.topic, partition
        self.clock = clock
        self.timed = timed
        self.wall_clock = [t for t in timed if isinstance(t.op, ProcessingTimeOperator)]
        self.failures = failures
        self.run_after = run_after
        self.count_late = count_late
        # pattern step -> [matches, timeouts] since the worker last exported them
        self.pattern_counts: dict[str, list[int]] = {}
        # this partition's watermark, or the minimum over the upstream partitions
        self.watermark: PartitionWatermark | UpstreamWatermarks = (
            UpstreamWatermarks(sum(ctx.partitions_of(t) for t in src.upstream_topics))
            if src.internal and ctx.partitions_of and src.upstream_topics
            else PartitionWatermark(src.max_out_of_orderness_ms))
        # an upstream slot's name as the user knows it: the source topic[partition] it reads
        self.slot_names = ([f"{t}[{p}]" for t in src.upstream_topics
                            for p in range(ctx.partitions_of(t))]
                           if isinstance(self.watermark, UpstreamWatermarks) else [])
        self.forwarders = [ctx.watermark_emitter_for(end, partition) for end in sub.sinks
                           if end.internal and ctx.watermark_emitter_for]
        self.tracked = bool(timed or self.forwarders)
        self.idle_timeout_s = (src.idle_timeout_ms / 1000
                               if src.idle_timeout_ms and not src.internal else None)
        self.last_input = time.monotonic()
        self.idle = False
        self.forwarded: int | None = NO_WATERMARK  # last watermark sent downstream (None = idle)

    def state(self) -> bytes | None:
        """The watermark state a checkpoint records (position.py), when time is tracked, and
        always for a repartition input: after a restart it still knows which upstream
        partitions reached the end of a bounded run (runtime/bounded_run.py)."""
        keep = self.tracked or isinstance(self.watermark, UpstreamWatermarks)
        return orjson.dumps(self.watermark.state()) if keep else None

    def restore(self, stored: list[bytes]) -> None:
        """Resume where the stores' checkpoint left event time."""
        for raw in stored:
            self.watermark.restore(orjson.loads(raw))
        self.clock.advance(self.watermark.current)

    def input_arrived(self) -> None:
        self.last_input = time.monotonic()
        self.idle = False

    def observe(self, batch: Batch) -> None:
        """A source partition's watermark, before each record (for windows) or per batch."""
        wm = self.watermark
        assert isinstance(wm, PartitionWatermark)
        if self.timed:
            before = wm.observe([r[2] for r in batch])
            self.clock.set_batch([r[3] for r in batch], before, wm.current)
        elif batch:
            wm.observe((max(r[2] for r in batch),))
            self.clock.advance(wm.current)

    def advance_to(self, watermark: int) -> None:
        """A source partition's event time reached `watermark` without a record (a control
        entry in its input); `after_batch` then closes what it passed."""
        wm = self.watermark
        if not isinstance(wm, PartitionWatermark):
            raise ValueError(f"task {self.task_id} reads a repartition topic: its watermark "
                             "comes from the upstream partitions, not from a control entry")
        wm.advance_to(watermark)
        self.clock.advance(wm.current)
        self.input_arrived()

    def after_batch(self, offset: int) -> bool:
        """Close what the watermark passed, send late records, forward the watermark.
        True when a watermark went downstream (outputs without input progress)."""
        current = self.clock.current
        for step in self.timed:
            op = step.op
            self._fire(step, lambda op=op: op.on_watermark(current, offset))
        self._drain_late()
        return self._forward()

    def tick(self, now_ms: int, now_monotonic: float, offset: int) -> bool:
        """Between batches: mark the input partition idle after its `idle_timeout` without
        records, and fire due processing-time timers. True when something went downstream."""
        if (self.idle_timeout_s is not None and not self.idle
                and now_monotonic - self.last_input >= self.idle_timeout_s):
            self.idle = True
            log.info("input partition idle", extra={"task": self.task_id, "topic": self.topic,
                                                    "partition": self.partition})
        fired = False
        for step in self.wall_clock:
            op = step.op
            assert isinstance(op, ProcessingTimeOperator)
            if self._fire(step, lambda op=op: op.on_processing_time(now_ms, offset)):
                fired = True
        self._drain_late()
        return self._forward() or fired

    def pending(self) -> dict[str, dict[str, int]]:
        """What the timed steps' committed stores still hold open, by step."""
        return {step.op.name: step.op.pending() for step in self.timed}

    def holding_back(self) -> list[Holdback]:
        """The upstream partitions never heard from (they hold this task's watermark at its
        start), else those at the minimum while another is ahead; none once all are idle, and
        none for a task whose results do not wait for event time (no timed step, nothing
        downstream): its marks are not even checkpointed."""
        wm = self.watermark
        if not self.tracked or not isinstance(wm, UpstreamWatermarks) or wm.all_idle:
            return []
        active = {p: wm.marks.get(p) for p in range(wm.upstream) if p not in wm.idle}
        heard = {p: m for p, m in active.items() if m is not None}
        ahead = max(heard.values(), default=None)
        silent = [p for p, m in active.items() if m is None]
        if silent:
            return [Holdback(self.slot_names[p], None, ahead) for p in silent]
        low = min(heard.values(), default=None)
        return [Holdback(self.slot_names[p], m, ahead) for p, m in heard.items()
                if m == low and ahead is not None and m < ahead]

    def _fire(self, step: StepAt[TimedOperator], call: Callable[[], Batch]) -> bool:
        """Run a time callback (closing windows, timers) and its outputs down the chain; a
        failing timer goes to its policy and the callback is called again for the rest."""
        while True:
            try:
                out = call()
                break
            except StepFailed as exc:
                if not exc.retry:
                    raise self.failures.fatal(exc) from exc.cause
                self.failures.step_failed(exc, input_record=False, chain=step.chain)
                if exc.partial:
                    self.run_after(step, exc.partial)
        if out:
            self.run_after(step, out)
        return bool(out)

    def _drain_late(self) -> None:
        for step in self.timed:
            op = step.op
            if isinstance(op, DeferredInput):
                self._drain_deferred(step, op)
            late = op.late
            if late:
                self._send(step, op.late_sink, late, itemgetter(0))
                self.count_late(len(late))
                late.clear()

    def _drain_deferred(self, step: StepAt[TimedOperator], op: DeferredInput) -> None:
        """Buffered input that failed when its time came goes to the step's policy; the
        step's timeouts go to its timeout topic (a record that cannot be written, too)."""
        counts = self.pattern_counts.setdefault(op.name, [0, 0])
        counts[0] += op.matches
        counts[1] += len(op.timeouts)
        op.matches = 0
        failed, op.failed = op.failed, []
        for exc in failed:
            self.failures.step_failed(exc, input_record=False, chain=step.chain)
        timeouts, op.timeouts = op.timeouts, []
        self._send(step, op.timeout_sink, timeouts, lambda record: record)

    def _send(self, step: StepAt[TimedOperator], sink: Callable[[list[Any]], None] | None,
              pending: list[Any], record_of: Callable[[Any], Any]) -> None:
        """Write `pending` to a step's own topic (None: dropped); an entry that cannot be
        written goes to the step's policy as its record (`record_of`), the rest still go."""
        while sink is not None and pending:
            try:
                sink(pending)
                return
            except EmitFailed as exc:
                self.failures.step_failed(
                    StepFailed(step.op.name, record_of(pending[exc.index]), exc.cause),
                    input_record=False, chain=step.chain)
                pending = pending[exc.index + 1:]

    def _forward(self) -> bool:
        if not self.forwarders:
            return False
        wm = self.watermark
        idle = self.idle or (isinstance(wm, UpstreamWatermarks) and wm.all_idle)
        status = None if idle else self.clock.current
        if status == self.forwarded or status == NO_WATERMARK:
            return False
        for forward in self.forwarders:
            forward(status)
        self.forwarded = status
        return True
