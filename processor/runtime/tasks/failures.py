"""What happens to a record a task cannot process: its step's error policy, in one place.

Two things fail: a source message that does not decode (step "source", the source's
`on_error`) and a step raising StepFailed on a record (that step's `on_error`). Either way the
policy decides: `fail` stops the task with the record's coordinates; `skip` and `dlq` count the
failure and log it (rate-limited), `dlq` also writes a dead letter. A transient cause (the
schema registry unreachable) is never the record's fault: the task stops instead.

A dead letter carries the input record's own bytes when the failing record is one input
record (so `dlq replay` can put it back), or JSON of a derived result (after a stateful step,
a timer, a closing window). One input record that fails in several derived forms in one chain
gets one letter: a replay re-runs that whole chain for it.
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

import orjson

from processor.errors import ProcessorError, RecordError
from processor.operators import StepFailed
from processor.runtime.kafka.deadletter import DeadLetter, derived_bytes
from processor.serde.errors import DeserializationError

log = logging.getLogger("processor.task")

SOURCE_STEP = "source"


class FailureHandler:
    """One task's failure path: the policies, the failure counts and the dead-letter writer."""

    def __init__(self, task_id: str, topic: str, partition: int, policies: dict[str, str],
                 source_policy: str, dead_letter: Callable[[DeadLetter], None] | None,
                 *, internal: bool, timestamp_field: str | None) -> None:
        self.task_id, self.topic, self.partition = task_id, topic, partition
        self.policies = policies  # step name -> fail | skip | dlq
        self.source_policy = source_policy
        self.dead_letter = dead_letter
        self.internal = internal  # a repartition input: letters name the original input record
        self.timestamp_field = timestamp_field
        self.counts: dict[tuple[str, str, str], int] = {}  # (policy, step, error class) -> n
        self._log = FailureLog()
        self._messages: list[Any] = []  # the batch being processed: input records by offset
        # (input offset, chain) already dead-lettered in this batch (chain None: the source)
        self._lettered: set[tuple[int, int | None]] = set()

    def batch_started(self, messages: list[Any]) -> None:
        self._messages = messages

    def batch_done(self) -> None:
        self._messages = []
        self._lettered.clear()

    def fatal(self, exc: StepFailed) -> RecordError:
        """The error that stops the task for a step failure under policy `fail` (or not
        resumable: a failure the step cannot go on past)."""
        return RecordError(f"step failed: {exc}", topic=self.topic, partition=self.partition,
                           offset=exc.record[3], step=exc.step)

    def step_failed(self, exc: StepFailed, *, input_record: bool, chain: int) -> None:
        """Step `exc.step` failed on `exc.record` in `chain`. `input_record`: the record is
        one input record (no stateful step before it), so its letter carries the input bytes."""
        policy = self.policies.get(exc.step, "fail")
        if policy == "fail" or getattr(exc.cause, "transient", False):
            raise self.fatal(exc) from exc.cause
        record = exc.record
        message = self._message_at(record[3]) if input_record else None
        if message is None:
            letter = DeadLetter(exc.step, exc.cause, self.topic, self.partition, record[3],
                                record[2], derived_bytes(record[0]), derived_bytes(record[1]),
                                payload="derived")
        elif self._lettered_already(message, chain, policy):
            return
        else:
            letter = self._input_letter(message, exc.step, exc.cause)
        self._settle(letter, policy)

    def undecodable(self, message: Any, exc: Exception) -> None:
        """An input message whose value, key or event time does not decode."""
        problem = decode_problem(exc, self.timestamp_field)
        if self.source_policy == "fail" or getattr(exc, "transient", False):
            raise RecordError(problem, topic=self.topic, partition=self.partition,
                              offset=message.offset(), step=SOURCE_STEP) from exc
        cause = exc if isinstance(exc, ProcessorError) else DeserializationError(problem)
        if not self._lettered_already(message, None, self.source_policy):
            self._settle(self._input_letter(message, SOURCE_STEP, cause), self.source_policy)

    def _lettered_already(self, message: Any, chain: int | None, policy: str) -> bool:
        if policy != "dlq":
            return False
        mark = (message.offset(), chain)
        if mark in self._lettered:
            return True  # another record derived from this input failed in this chain too
        self._lettered.add(mark)
        return False

    def _input_letter(self, m: Any, step: str, cause: BaseException) -> DeadLetter:
        upstream = None
        if self.internal:
            try:
                envelope = orjson.loads(m.value())
                upstream = (int(envelope[0]), int(envelope[1]))
            except Exception:
                upstream = None
        return DeadLetter(step, cause, self.topic, self.partition, m.offset(), m.timestamp()[1],
                          m.key(), m.value(), list(m.headers() or []), upstream=upstream)

    def _settle(self, letter: DeadLetter, policy: str) -> None:
        """Count, dead-letter (policy dlq) and log a failure the task goes on past."""
        key = (policy, letter.step, letter.error_class)
        self.counts[key] = self.counts.get(key, 0) + 1
        if policy == "dlq" and self.dead_letter is not None:
            self.dead_letter(letter)
        self._log.record(letter, policy, self.task_id)

    def _message_at(self, offset: int) -> Any:
        msgs = self._messages
        i = bisect_left(msgs, offset, key=_offset_of)
        return msgs[i] if i < len(msgs) and msgs[i].offset() == offset else None


def decode_problem(exc: Exception, ts_field: str | None) -> str:
    if isinstance(exc, KeyError | TypeError | ValueError) and ts_field and not isinstance(
            exc, ProcessorError | orjson.JSONDecodeError | UnicodeDecodeError):
        return (f"timestamp field {ts_field!r} missing or not a valid time "
                f"({type(exc).__name__}: {exc})")
    return f"cannot decode record ({type(exc).__name__}: {exc})"


def _offset_of(m: Any) -> int:
    return m.offset()


class FailureLog:
    """One warning per failure, but at most one line per step every `every_s` seconds when
    records fail in bulk (the DLQ and the metrics hold every one)."""

    def __init__(self, every_s: float = 5.0) -> None:
        self.every_s = every_s
        self._last: dict[str, tuple[float, int]] = {}  # step -> (time of last line, suppressed)

    def record(self, letter: DeadLetter, policy: str, task: str) -> None:
        now = time.monotonic()
        last, suppressed = self._last.get(letter.step, (-1e9, 0))
        if now - last < self.every_s:
            self._last[letter.step] = (last, suppressed + 1)
            return
        self._last[letter.step] = (now, 0)
        log.warning("record failed", extra={
            "task": task, "topic": letter.topic, "partition": letter.partition,
            "offset": letter.offset, "step": letter.step, "policy": policy,
            "error": f"{letter.error_class}: {str(letter.cause)[:500]}",
            "payload": letter.payload, "suppressed_since_last": suppressed})
