"""Input messages -> records `(key, value, timestamp, offset)`, a whole batch at a time.

A source topic's batch goes through one generated comprehension with the codecs inlined
(json, string, bytes; schema formats pass their decode functions), so decoding costs no
Python call per key or value. A repartition topic carries envelopes written by upstream tasks
(runtime/kafka/collector.py): records, de-duplicated against the upstream marks (position.py), and
watermark reports, which go to the task's upstream watermarks. When a batch fails to decode,
it is decoded again message by message and each failing message goes to `undecodable`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from processor.codegen import compile_generated
from processor.graph import TopicEnd
from processor.operators import Batch
from processor.runtime.tasks.position import UpstreamMarks
from processor.serde import serde_for
from processor.serde.formats import INLINE_GLOBALS, inline_decode
from processor.timeutil.timestamps import iso_to_ms
from processor.timeutil.watermark import Clock, PartitionWatermark, UpstreamWatermarks

Decode = Callable[[bytes | None], Any]
Undecodable = Callable[[Any, Exception], None]
"""(message, error): the failure path of a message that does not decode."""


class InputDecoder:
    """Decodes a task's input batches: source records, or a repartition topic's envelopes."""

    def __init__(self, src: TopicEnd, key_decode: Decode | None, value_decode: Decode | None,
                 marks: UpstreamMarks, watermark: PartitionWatermark | UpstreamWatermarks,
                 clock: Clock, undecodable: Undecodable) -> None:
        """`key_decode`, `value_decode`: the codecs of schema formats (None: inlined)."""
        self.internal = src.internal
        self._key_decode = key_decode or serde_for(src.key_format).decode
        self._decode_batch = batch_decoder(src.key_format, src.value_format, src.timestamp_field,
                                           src.timestamp_unit, key_decode, value_decode)
        self.marks = marks
        self.watermark = watermark
        self.clock = clock
        self.undecodable = undecodable

    def decode(self, messages: list[Any]) -> Batch:
        try:
            if self.internal:
                return self._envelopes(messages)
            return self._decode_batch(messages)
        except Exception:
            return self._one_by_one(messages)

    def _one_by_one(self, messages: list[Any]) -> Batch:
        """The batch decoder failed: decode message by message, failures to their policy."""
        batch: Batch = []
        for m in messages:
            try:
                batch.extend(self._decode_batch([m]))
            except Exception as exc:
                self.undecodable(m, exc)
        return batch

    def _envelopes(self, messages: list[Any]) -> Batch:
        """Repartition records are `[upstream slot, source offset, seq, value]` (plus the side
        for a join's input); watermark reports `[upstream slot, watermark | null]`. A slot is
        a feeder's partition, numbered after the partitions of the feeders before it."""
        kdec, marks, loads = self._key_decode, self.marks.highest, orjson.loads
        wm = self.watermark
        out: Batch = []
        offsets: list[int] = []
        before: list[int] = []
        current = wm.current
        for m in messages:
            try:
                envelope = loads(m.value())
                if len(envelope) == 2:
                    int(envelope[0])
                else:
                    part, off, seq, value = envelope[:4]
                    if len(envelope) == 5:  # a join input: (side, value)
                        value = (envelope[4], value)
                    key = kdec(m.key())
            except Exception as exc:  # not written by a processor task
                self.undecodable(m, exc)
                continue
            if len(envelope) == 2:
                if isinstance(wm, UpstreamWatermarks):
                    current = wm.report(envelope[0], envelope[1])
                continue
            mark = (off, seq)
            last = marks.get(part)
            if last is not None and mark <= last:
                self.marks.duplicates_dropped += 1
                continue  # re-sent by an upstream task replaying after a crash
            marks[part] = mark
            out.append((key, value, m.timestamp()[1], m.offset()))
            offsets.append(m.offset())
            before.append(current)
        self.clock.set_batch(offsets, before, current)
        return out


def batch_decoder(key_format: str, value_format: str, ts_field: str | None, ts_unit: str,
                  key_decode: Decode | None = None, value_decode: Decode | None = None,
                  ) -> Callable[[list[Any]], Batch]:
    """One comprehension decoding a whole batch, codecs inlined (no call per key or value)
    for json/string/bytes; schema formats pass their decode functions.
    Event time comes from the value field `ts_field` (epoch ms / s, or ISO-8601) or the record."""
    key = "_kdec(m.key())" if key_decode else inline_decode(key_format, "m.key()", "_k")
    value = "_vdec(m.value())" if value_decode else inline_decode(value_format, "m.value()", "_v")

    if ts_field is None:
        row = f"{key}, {value}, m.timestamp()[1], m.offset()"
    else:
        field = f"_val[{ts_field!r}]"
        ts = {"ms": f"int({field})", "s": f"int({field} * 1000)", "iso": f"_iso({field})"}[ts_unit]
        row = f"{key}, (_val := {value}), {ts}, m.offset()"
    source = f"lambda messages: [({row}) for m in messages]"
    env = {**INLINE_GLOBALS, "_iso": iso_to_ms, "_kdec": key_decode, "_vdec": value_decode}
    return eval(compile_generated(source, f"decode {key_format}/{value_format}", "eval"), env)
