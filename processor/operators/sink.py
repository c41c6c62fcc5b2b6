"""`to`: hand records to an emitter (the runtime's producer) and pass them on unchanged."""

from __future__ import annotations

from collections.abc import Callable

from processor.operators.base import Batch

Emitter = Callable[[Batch], None]


class Sink:
    """Write records to a topic. The emitter serializes and produces; tests pass a list.append."""

    stateful = False

    def __init__(self, name: str, topic: str, emit: Emitter) -> None:
        self.name = name
        self.topic = topic
        self.emit = emit

    def process(self, batch: Batch) -> Batch:
        if batch:
            self.emit(batch)
        return batch
