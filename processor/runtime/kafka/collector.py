"""RecordCollector: every record a task writes to Kafka, other than changelogs, goes out here.

Four kinds of writers, each built once per (topic, task partition):
- sink: encode and produce; the codecs are inlined into one generated loop (hot path);
- repartition: the record inside the envelope `[upstream slot, source offset, seq, value]`
  (`+ [side]` for a join's input) that lets the reading task drop copies re-sent after a
  crash (state/changelog.py); a slot is the feeder's partition, numbered after the
  partitions of the topic's other feeders;
- watermark: `[upstream slot, watermark | null]` to EVERY partition of a repartition
  topic, in-band after the records it covers (null = the upstream slot is idle);
- late: a window's late record, with headers naming the window, the watermark at arrival and
  the source coordinates.
The producer is looked up at each call: the worker replaces it after a failed transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from confluent_kafka import KafkaError, KafkaException, Producer

from processor.codegen import define
from processor.graph import TopicEnd
from processor.operators import Batch
from processor.operators.base import index_of
from processor.operators.sink import EmitFailed, Emitter
from processor.runtime.kafka.produce import produce_when_room
from processor.runtime.kafka.serdes import Serdes
from processor.serde import Serde, serde_for
from processor.serde.formats import INLINE_GLOBALS, inline_encode

LateRecord = tuple[tuple[Any, Any, int, int], int, int, int]  # (record, window start, end, watermark)


class RecordCollector:
    def __init__(self, producer: Callable[[], Producer], partitions: dict[str, int],
                 serdes: Callable[[TopicEnd, bool], Serde] | None = None) -> None:
        self._producer = producer
        self.partitions = partitions  # topic -> partition count (kept current by the worker)
        self.produced: dict[str, int] = {}  # records per topic since the metrics last read it
        self.serdes = serdes or Serdes()

    def _count(self, topic: str, n: int) -> None:
        self.produced[topic] = self.produced.get(topic, 0) + n

    def emitter_for(self, end: TopicEnd, partition: int) -> Emitter:
        """A record that cannot be encoded, or that the producer refuses as too large, raises
        EmitFailed naming it (the records before it are out); other produce errors propagate."""
        if end.internal:
            return self._repartition(end, serde_for(end.key_format).encode, partition)
        venc = "_venc(v)" if end.value_serde else inline_encode(end.value_format, "v")
        kenc = "_kenc(k)" if end.key_serde else inline_encode(end.key_format, "k")
        source = f"""
def emit(batch):
    produce = producer().produce
    r = None
    try:
        for r in batch:
            k, v, t, _ = r
            value, key = {venc}, {kenc}
            try:
                produce(topic, value, key, timestamp=t)
            except BufferError:
                produce_when_room(producer(), topic, value, key, timestamp=t)
    except Exception as exc:
        failed(batch, r, exc, topic)
    count(topic, len(batch))
"""
        env = {**INLINE_GLOBALS, "producer": self._producer, "topic": end.topic,
               "produce_when_room": produce_when_room, "count": self._count,
               "failed": self._failed,
               "_venc": self.serdes(end, False).encode, "_kenc": self.serdes(end, True).encode}
        return define(source, f"emit {end.topic}", env, "emit")

    def _failed(self, batch: Batch, record: Any, exc: Exception, topic: str) -> None:
        index = index_of(batch, record)
        self._count(topic, index)
        if isinstance(exc, KafkaException) and exc.args[0].code() != KafkaError.MSG_SIZE_TOO_LARGE:
            raise exc  # the producer itself failed (fenced, fatal): not this record's fault
        raise EmitFailed(index, exc) from exc

    def slot(self, end: TopicEnd, partition: int) -> int:
        """A feeder's partition as numbered by the repartition topic's readers: after the
        partitions of the feeders before it (so two inputs' offsets never mix)."""
        return sum(self.partitions[t] for t in end.upstream_topics[:end.feeder]) + partition

    def _repartition(self, end: TopicEnd, kenc: Any, partition: int) -> Emitter:
        producer, dumps, count = self._producer, orjson.dumps, self._count
        topic, slot = end.topic, self.slot(end, partition)
        tail = [] if end.side is None else [end.side]  # a join input says which side it is
        state = {"offset": -1, "seq": 0}  # seq numbers records derived from one source offset

        def emit(batch: Batch) -> None:
            produce = producer().produce
            last, seq = state["offset"], state["seq"]
            r = None
            try:
                for r in batch:
                    k, v, t, o = r
                    value, key = dumps([slot, o, seq + 1 if o == last else 0, v, *tail]), kenc(k)
                    if o == last:
                        seq += 1
                    else:
                        last, seq = o, 0
                    try:
                        produce(topic, value, key, timestamp=t)
                    except BufferError:
                        produce_when_room(producer(), topic, value, key, timestamp=t)
            except Exception as exc:
                state["offset"], state["seq"] = last, seq
                self._failed(batch, r, exc, topic)
            state["offset"], state["seq"] = last, seq
            count(topic, len(batch))

        return emit

    def watermark_emitter_for(self, end: TopicEnd, partition: int) -> Callable[[int | None], None]:
        slot = self.slot(end, partition)

        def emit(watermark: int | None) -> None:
            value = orjson.dumps([slot, watermark])
            for p in range(self.partitions[end.topic]):
                produce_when_room(self._producer(), end.topic, value, None, partition=p)

        return emit

    def late_emitter_for(self, end: TopicEnd, partition: int, source_topic: str,
                         step: str) -> Callable[[list[LateRecord]], None]:
        kenc, venc = self.serdes(end, True).encode, self.serdes(end, False).encode
        fixed = [("processor.step", step.encode()),
                 ("processor.source.topic", source_topic.encode()),
                 ("processor.source.partition", str(partition).encode())]

        def emit(late: list[LateRecord]) -> None:
            entry = None
            try:
                for entry in late:
                    (k, v, t, o), start, stop, watermark = entry
                    headers = [*fixed, ("processor.source.offset", str(o).encode()),
                               ("processor.window.start", str(start).encode()),
                               ("processor.window.end", str(stop).encode()),
                               ("processor.watermark", str(watermark).encode())]
                    produce_when_room(self._producer(), end.topic, venc(v), kenc(k), timestamp=t,
                                      headers=headers)
            except Exception as exc:
                self._failed(late, entry, exc, end.topic)
            self._count(end.topic, len(late))

        return emit
