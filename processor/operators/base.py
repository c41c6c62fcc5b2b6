"""Records and the operator contract shared by every step.

A record is a plain tuple `(key, value, timestamp_ms, offset)` — tuples are the cheapest
Python object to build and unpack on the hot path. `offset` is the offset of the source
record the value derives from; it gives errors their coordinates and lets a restored store
skip input it has already absorbed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

Record = tuple[Any, Any, int, int]
Batch = list[Record]


class StepFailed(Exception):
    """A step raised on one record; carries the record so the runtime can name its coordinates."""

    def __init__(self, step: str, record: Record, cause: BaseException) -> None:
        self.step, self.record, self.cause = step, record, cause
        super().__init__(f"{type(cause).__name__}: {cause}")


class Operator(Protocol):
    """One step of a pipeline, applied to a batch of records."""

    name: str
    stateful: bool

    def process(self, batch: Batch) -> Batch: ...


class Stateless:
    """Base for steps without state: a batch function plus a per-record fallback to find culprits."""

    stateful = False

    def __init__(self, name: str) -> None:
        self.name = name

    def process(self, batch: Batch) -> Batch:
        try:
            return self._batch(batch)
        except Exception as exc:  # locate the failing record; the step has no side effects
            for record in batch:
                try:
                    self._batch([record])
                except Exception as one:
                    raise StepFailed(self.name, record, one) from one
            raise StepFailed(self.name, batch[0], exc) from exc

    def _batch(self, batch: Batch) -> Batch:
        raise NotImplementedError


RecordFn = Callable[[Any, Any, int], Any]
