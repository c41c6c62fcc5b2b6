"""Where a backfill hands over: per partition of the live topic, the first offset read live.

The switch is a time T (`switch: {timestamp: T}`). The history is the files' rows whose event
time is before T; the live topic is read, per partition, from the first record whose *Kafka
timestamp* is at or after T (Kafka's offsets-for-times lookup), or from the partition's end
when it has none yet. The two agree exactly when the live topic's records carry their event
time as their Kafka timestamp (producers set it; the topic's `message.timestamp.type` is
CreateTime) and each partition's timestamps do not go back across T. A history kept in the
source's own topic (`backfill` without `file`) is that topic up to the switch offsets, which a
time or `switch: {offsets}` gives.

The identity of a backfill is the topology file's bytes (it holds the switch and the history
paths) with the application name: a rerun of the same file is the same backfill.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, TopicPartition

from processor.errors import ProcessorError
from processor.spec import LoadedSpec
from processor.spec.bounded import Bound
from processor.spec.topics import SourceSpec

LOOKUP_TIMEOUT_S = 15.0


def backfill_sources(loaded: LoadedSpec) -> dict[str, SourceSpec]:
    """The stream sources with `backfill:`; refuses a topology `processor backfill` cannot run."""
    spec = loaded.spec
    filled = {n: s for n, s in spec.sources.items() if s.backfill is not None}
    if not filled:
        raise ProcessorError(f"{loaded.file}: no source has `backfill:` (history to read "
                             "before the live topic); `processor batch` runs over files alone")
    others = [n for n, s in spec.sources.items()
              if s.kind == "stream" and s.backfill is None]
    if others:
        raise ProcessorError(f"source(s) {', '.join(others)} have no `backfill:`: every stream "
                             "source of a backfilled topology needs its history up to the switch")
    return filled


def given_offsets(offsets: Mapping[int, int], ends: Mapping[int, int], topic: str
                  ) -> dict[int, int]:
    """`switch: {offsets}` per partition of the live topic: a partition not named switches at
    its end (all of it is history); one the topic lacks is an error."""
    unknown = sorted(set(offsets) - set(ends))
    if unknown:
        raise ProcessorError(f"backfill.switch.offsets names partition(s) {unknown} of "
                             f"{topic!r}, which has {len(ends)}")
    return {p: min(offsets.get(p, ends[p]), ends[p]) for p in sorted(ends)}


def backfill_identity(loaded: LoadedSpec, application: str) -> str:
    """16 hex digits naming this backfill: the topology file's bytes and the application."""
    digest = hashlib.sha256(application.encode() + b"\0" + Path(loaded.file).read_bytes())
    return digest.hexdigest()[:16]


def resolve_switch(found: Mapping[int, int], ends: Mapping[int, int]) -> dict[int, int]:
    """Per partition, the switch offset: the offsets-for-times answer, or the partition's end
    where none was found (Kafka answers -1: no record at or after the time yet)."""
    return {p: (found[p] if found.get(p, -1) >= 0 else ends[p]) for p in sorted(ends)}


def switch_offsets(consumer: Consumer, topic: str, partitions: int, switch: Bound
                   ) -> dict[int, int]:
    """The switch offsets of `topic` (`switch`: a time, or offsets), asked of the broker."""
    try:
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p),
                                                  timeout=LOOKUP_TIMEOUT_S)[1]
                for p in range(partitions)}
        if switch.offsets is not None:
            return given_offsets(switch.offsets, ends, topic)
        answer = consumer.offsets_for_times(
            [TopicPartition(topic, p, switch.timestamp) for p in range(partitions)],
            timeout=LOOKUP_TIMEOUT_S)
    except KafkaException as exc:
        raise ProcessorError(f"cannot look up the switch offsets of {topic!r}: "
                             f"{exc.args[0].str()}") from None
    for tp in answer:
        if tp.error is not None:
            raise ProcessorError(f"cannot look up the switch offset of {topic}[{tp.partition}]: "
                                 f"{tp.error.str()}")
    return resolve_switch({tp.partition: tp.offset for tp in answer}, ends)
