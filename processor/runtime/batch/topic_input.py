"""A topic source of a batch run: a range of the topic, read once without a consumer group.

The range is the source's `bounded:` (or `--start/--end`), else the whole topic as it is when
the run starts (earliest to latest, read committed). Records keep their topic offsets, so
errors name them as a worker's would, and the tasks decode them as a worker's do.
"""

from __future__ import annotations

from collections.abc import Iterator

from confluent_kafka.admin import AdminClient

from processor.runtime.batch.inputs import Chunk
from processor.runtime.config import WorkerConfig
from processor.runtime.kafka.clients import admin_config
from processor.runtime.kafka.range_reader import RangeReader, range_consumer_config
from processor.runtime.kafka.ranges import Ranges, describe, resolve_ranges
from processor.spec.bounded import BoundedSpec
from processor.spec.topics import SourceSpec


class TopicFeeder:
    """The messages of one topic's range, a fetch at a time, by partition."""

    def __init__(self, name: str, src: SourceSpec, config: WorkerConfig,
                 admin: AdminClient | None = None) -> None:
        self.src = src
        admin = admin or AdminClient(admin_config(config))
        self.ranges: Ranges = resolve_ranges(admin, name, src.topic, src.bounded or BoundedSpec())
        self.partitions = len(self.ranges)
        self._reader = RangeReader(src.topic, self.ranges, range_consumer_config(config))

    def chunks(self) -> Iterator[Chunk]:
        for partition, messages in self._reader:
            yield Chunk(messages={partition: messages}, rows=len(messages))

    def describe(self) -> dict[str, list[int]]:
        return describe(self.ranges)
