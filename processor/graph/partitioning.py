"""How many partitions each internal topic has, given the inputs' counts.

The rule the worker applies when it creates topics (runtime/kafka/topics.py), for runs that
make their internal topics themselves (the test driver's in-memory topics, a batch run's bus):
a repartition topic has its widest feeder's count, or its table's count when it feeds a
per-task table join (co-partitioning).
"""

from __future__ import annotations

from processor.graph.model import Topology


def internal_partitions(topology: Topology, sources: dict[str, int]) -> dict[str, int]:
    """Partition counts of every repartition topic, from the source and table topics' counts.
    Sub-topologies are numbered in creation order: a feeder is seen before its reader."""
    counts = dict(sources)
    internal: dict[str, int] = {}
    for sub in topology.subtopologies:
        n = counts.get(sub.source.topic, 0)
        for sink in sub.sinks:
            if not sink.internal:
                continue
            if sink.partitions_like is not None:
                internal[sink.topic] = counts[sink.partitions_like]
            else:
                internal[sink.topic] = max(n, internal.get(sink.topic, 0))
            counts[sink.topic] = internal[sink.topic]
    return internal
