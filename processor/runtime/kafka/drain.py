"""Has the whole group processed its input? Asked by a bounded run (`--stop-when-idle`) before
it stops.

Being idle is not enough: under KIP-848 a member that joins while a crashed member's session
is still open gets the free partitions at once and the crashed member's only when its session
expires (45 s by default). A worker that stopped on idleness alone would leave those unread.
So a partition counts as drained when nothing a reader of the worker's isolation level would
get lies after the group's committed offset — read, not computed: under exactly-once the end
offset also counts transaction markers and aborted records, which no reader ever sees.
"""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import KafkaError, TopicPartition


def undrained(group_consumer: Any, probe: Any, topics: list[str], *, earliest: bool,
              timeout_s: float = 10.0) -> list[str]:
    """`topic[partition]` of every partition with a record after the group's committed offset.

    `group_consumer` belongs to the group (its committed offsets are asked for);
    `probe` is a group-less consumer with `enable.partition.eof`, left unassigned after."""
    md = group_consumer.list_topics(timeout=timeout_s)
    tps = [TopicPartition(t, p) for t in topics if t in md.topics
           for p in sorted(md.topics[t].partitions)]
    if not tps:
        return []
    starts = []
    for tp in group_consumer.committed(tps, timeout=timeout_s):
        low, high = probe.get_watermark_offsets(TopicPartition(tp.topic, tp.partition),
                                                timeout=timeout_s)
        start = tp.offset if tp.offset >= 0 else (low if earliest else high)
        if start < high:
            starts.append(TopicPartition(tp.topic, tp.partition, start))
    if not starts:
        return []
    pending = {(tp.topic, tp.partition) for tp in starts}
    found: set[tuple[str, int]] = set()
    probe.assign(starts)
    try:
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            for m in probe.consume(100, 0.2):
                tp = (m.topic(), m.partition())
                if tp not in pending:
                    continue
                err = m.error()
                if err is None:
                    found.add(tp)  # a record the group has not committed past
                elif err.code() != KafkaError._PARTITION_EOF:
                    continue
                pending.discard(tp)
                probe.incremental_unassign([TopicPartition(*tp)])
    finally:
        probe.unassign()
    return [f"{t}[{p}]" for t, p in sorted(found | pending)]  # unanswered counts as not drained
