"""`to`: hand records to an emitter (the runtime's producer) and pass them on unchanged."""

from __future__ import annotations

from collections.abc import Callable

from processor.operators.base import Batch, Operator, StepFailed

Emitter = Callable[[Batch], None]


class EmitFailed(Exception):
    """An emitter could not encode or produce `batch[index]`; `batch[:index]` went out."""

    def __init__(self, index: int, cause: BaseException) -> None:
        self.index, self.cause = index, cause
        super().__init__(str(cause))


class Sink(Operator):
    """Write records to a topic. The emitter serializes and produces; tests pass a list.append."""

    def __init__(self, name: str, topic: str, emit: Emitter) -> None:
        self.name = name
        self.topic = topic
        self.emit = emit

    def process(self, batch: Batch) -> Batch:
        if batch:
            try:
                self.emit(batch)
            except EmitFailed as exc:
                i = exc.index
                raise StepFailed(self.name, batch[i], exc.cause, index=i, partial=batch[:i]) from exc.cause
        return batch
