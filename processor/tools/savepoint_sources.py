"""A savepoint's cut in its source topics, and where a rescaled source resumes.

Kafka topics only grow, and a restore cannot move records already in a source partition: a
key's records written before the cut stay in the partition the old count gave them. So a
source topic whose partition count changes must have been read to its end at the savepoint:
everything in it is then in the state, and everything written after the cut goes where the
new count puts it. `create` records, per input topic, its topic id and per partition its end
offset and whether the committed offset reached the last committed record (`cut`).

A restore into another partition count (`resume_offsets`): a partition of the same topic (same
topic id) that existed resumes at the savepoint's offset; a new partition, or every partition
of a topic deleted and re-created (another id), is read from its start: all it holds came
after the cut. A savepoint without these facts (taken before they were recorded), or whose
rescaled source had unconsumed records, is refused.
"""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient

from processor.graph import Topology
from processor.runtime.kafka.topics import topic_ids
from processor.tools.savepoint_format import SavepointError

PROBE_S = 15.0


def _drained(consumer: Consumer, behind: dict[tuple[str, int], int]) -> set[tuple[str, int]]:
    """Of the partitions whose committed offset is below their end: those with no committed
    record at or after it (only transaction markers or aborted records), found with one
    read_committed fetch each."""
    if not behind:
        return set()
    consumer.assign([TopicPartition(t, p, off) for (t, p), off in behind.items()])
    pending, drained = set(behind), set()
    deadline = time.monotonic() + PROBE_S
    try:
        while pending and time.monotonic() < deadline:
            for m in consumer.consume(500, 0.5):
                key = (m.topic(), m.partition())
                if key not in pending:
                    continue
                if m.error() is None:
                    pending.discard(key)  # a record the application had not consumed
                elif m.error().code() == KafkaError._PARTITION_EOF:
                    pending.discard(key)
                    drained.add(key)
    finally:
        consumer.unassign()
    return drained


def cut(consumer: Consumer, admin: AdminClient, topics: list[str], counts: dict[str, int],
        committed: dict[tuple[str, int], int]) -> dict[str, dict[str, Any]]:
    """Per input topic: `topic_id`, `end_offsets` and `consumed_to_end` per partition."""
    ids = topic_ids(admin, [t for t in topics if t in counts])
    ends: dict[tuple[str, int], int] = {}
    behind: dict[tuple[str, int], int] = {}
    for t in topics:
        for p in range(counts.get(t, 0)):
            low, high = consumer.get_watermark_offsets(TopicPartition(t, p), timeout=15)
            ends[(t, p)] = high
            start = committed.get((t, p), low)
            if start < high:
                behind[(t, p)] = max(start, low)
    drained = _drained(consumer, behind)
    return {t: {"topic_id": ids.get(t),
                "end_offsets": {str(p): ends[(t, p)] for p in range(counts.get(t, 0))},
                "consumed_to_end": {str(p): (t, p) not in behind or (t, p) in drained
                                    for p in range(counts.get(t, 0))}}
            for t in topics}


def stream_sources(topology: Topology) -> list[str]:
    """The topics the topology's tasks read with committed offsets (tables rebuild from theirs)."""
    return list(dict.fromkeys(s.source.topic for s in topology.subtopologies
                              if not s.source.internal))


def rescaled_sources(manifest: dict[str, Any], topology: Topology,
                     counts: dict[str, int]) -> dict[str, tuple[int, int]]:
    """Stream source topics whose partition count is not the savepoint's: topic -> (old, new)."""
    out = {}
    for topic in stream_sources(topology):
        saved = manifest["source_offsets"].get(topic)
        have = counts.get(topic)
        if saved is not None and have is not None and have != saved["partitions"]:
            out[topic] = (saved["partitions"], have)
    return out


def check_consumed(manifest: dict[str, Any], topic: str) -> None:
    """A rescaled source must have been read to its end at the savepoint."""
    saved = manifest["source_offsets"][topic]
    old, counted = saved["partitions"], saved.get("consumed_to_end")
    if counted is None or "topic_id" not in saved:
        raise SavepointError(
            f"source topic {topic!r} has another partition count than the savepoint's ({old}), "
            "and the savepoint does not record its end offsets (taken before rescaling was "
            "supported): take a new savepoint to rescale")
    left = {p: (saved["committed"].get(p, "none"), saved["end_offsets"][p])
            for p, done in counted.items() if not done}
    if left:
        where = ", ".join(f"partition {p}: committed {c}, end {e}" for p, (c, e) in sorted(
            left.items(), key=lambda kv: int(kv[0])))
        raise SavepointError(
            f"source topic {topic!r} had unconsumed records at the savepoint ({where}): a restore "
            f"into another partition count cannot move records already in a partition. Let the "
            "workers catch up with the input, then stop them and take the savepoint again")


def resume_offsets(manifest: dict[str, Any], topic: str, partitions: int, current_id: str | None,
                   consumer: Consumer) -> tuple[dict[int, int], bool]:
    """Where each partition of a rescaled source resumes, and whether it is the same topic."""
    check_consumed(manifest, topic)
    saved = manifest["source_offsets"][topic]
    if saved["topic_id"] is None or current_id is None:
        # a grown topic read from its start would process its old records twice
        raise SavepointError(
            f"cannot tell whether source topic {topic!r} is the one the savepoint read (no "
            f"topic id {'recorded' if saved['topic_id'] is None else 'from the broker now'}; "
            "topic ids need Kafka 2.8 or later): refusing to rescale it")
    same = saved["topic_id"] == current_id
    offsets = {}
    for p in range(partitions):
        if same and p < saved["partitions"]:
            end = int(saved["end_offsets"][str(p)])
            offsets[p] = max(int(saved["committed"].get(str(p), end)), end)
        else:  # after the cut: read from the start
            offsets[p] = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=15)[0]
    return offsets, same
