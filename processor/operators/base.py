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
    """A step raised on one record; carries what the runtime needs to go on without it.

    Contract when `index >= 0`: the step fully processed `batch[:index]` (its outputs are
    `partial`), the failing record `batch[index]` changed nothing, and `batch[index + 1:]` is
    untouched — so the runtime can hand the record to its error policy and resume the step
    with the rest. `index == -1`: the failure is not tied to one input record of the call
    (e.g. a timer or a closing window); `record` then names what failed, and `retry` says
    whether calling the same entry point again goes on past it (a failed timer is removed).
    """

    retry = False

    def __init__(self, step: str, record: Record, cause: BaseException, *, index: int = -1,
                 partial: Batch | None = None) -> None:
        self.step, self.record, self.cause = step, record, cause
        self.index = index
        self.partial: Batch = partial if partial is not None else []
        super().__init__(f"{type(cause).__name__}: {cause}")


def index_of(batch: list[Any], record: Any) -> int:
    """Where `record` (the very object) sits in `batch`, or -1: only on failure paths."""
    return next((i for i, r in enumerate(batch) if r is record), -1)


def failed_at(step: str, batch: Batch, record: Record | None, cause: BaseException,
              partial: Batch) -> StepFailed:
    """A StepFailed for `record`, located in `batch` by identity (only on the failure path)."""
    index = index_of(batch, record)
    if record is None or index < 0:
        return StepFailed(step, record or (None, None, 0, -1), cause)
    return StepFailed(step, record, cause, index=index, partial=partial)


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
            raise self._locate(batch, exc) from exc

    def _locate(self, batch: Batch, exc: Exception) -> StepFailed:
        """The first record that fails on its own, with the outputs of the records before it."""
        for i, record in enumerate(batch):
            try:
                self._batch([record])
            except Exception as one:
                return StepFailed(self.name, record, one, index=i, partial=self._batch(batch[:i]))
        return StepFailed(self.name, batch[0], exc)

    def _batch(self, batch: Batch) -> Batch:
        raise NotImplementedError


RecordFn = Callable[[Any, Any, int], Any]
