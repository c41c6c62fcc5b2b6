"""Create the topics a topology needs (changelogs, repartition topics, sinks, ...); read one to its end."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from processor.errors import ProcessorError
from processor.graph import Topology
from processor.state.changelog import CHANGELOG_CONFIGS

log = logging.getLogger("processor.topics")

# Repartition records carry their input's event time: with time retention, records of old
# data (a backfill, a lagging worker) would be deleted before the task behind them read them.
# Kafka Streams keeps them forever too; committed records are deleted instead (runtime/kafka/purge.py).
REPARTITION_CONFIGS = {"cleanup.policy": "delete", "retention.ms": "-1"}


class TopicError(ProcessorError):
    """A topic the topology needs is missing or has the wrong shape."""


def create_command(topic: str, bootstrap_servers: str) -> str:
    """The command line that creates a missing topic (`processor topics`, processor/tools)."""
    return f"processor topics create {topic} --partitions 1 --bootstrap-servers {bootstrap_servers}"


def partition_counts(admin: AdminClient, timeout: float = 10.0) -> dict[str, int]:
    try:
        md = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise TopicError(f"cannot read cluster metadata: {exc.args[0].str()} "
                         "(is bootstrap_servers right and the broker up?)") from None
    return {name: len(t.partitions) for name, t in md.topics.items() if t.error is None}


def ensure_topics(admin: AdminClient, topology: Topology, *, create: bool,
                  replication_factor: int = -1, wait_for_sources_s: float = 30.0,
                  directory: str | None = None,
                  changelog_configs: dict[str, str] | None = None,
                  bootstrap_servers: str = "<host:port>") -> dict[str, int]:
    """Make sure every internal and sink topic exists; returns partition counts by topic.

    Internal topics get as many partitions as the topic feeding them, so partition N of the
    input, its repartition topic and its changelog all belong to the same task number.
    `changelog_configs` (the worker's `changelog_topic_configs`) override the changelog
    defaults of topics created here; existing topics keep theirs. Source topics are never
    created (their partition count is the application's parallelism, a user's choice): a
    missing one is waited for `wait_for_sources_s`, saying the command that creates it.
    """
    deadline = time.monotonic() + wait_for_sources_s
    told = 0.0
    while True:
        counts = partition_counts(admin)
        missing = [t for t in topology.input_topics if t not in counts]
        if not missing:
            break
        how = "; ".join(create_command(t, bootstrap_servers) for t in missing)
        if time.monotonic() > deadline:
            raise TopicError(f"source topic(s) {', '.join(missing)} do not exist; create them "
                             f"(choose the partition count: the tasks' parallelism): {how}")
        if time.monotonic() - told >= 10.0:  # said once, then every 10 s while waiting
            told = time.monotonic()
            log.warning(f"waiting for source topic(s) {', '.join(missing)}: create them with "
                        f"{how}", extra={"topics": missing})
        time.sleep(1.0)

    wanted: dict[str, tuple[int, dict[str, str]]] = {}
    for sub in topology.subtopologies:
        # sub-topologies are numbered in creation order, so a repartition topic's feeder
        # is always seen before the sub-topology reading it
        n = counts.get(sub.source.topic) or wanted.get(sub.source.topic, (0, {}))[0]
        for sink in sub.sinks:
            if sink.internal and sink.partitions_like is not None:
                # feeds a per-task table join: partition p must meet table partition p
                wanted[sink.topic] = (counts[sink.partitions_like], dict(REPARTITION_CONFIGS))
            elif sink.internal:  # several feeders (a merge, a join): the widest one's count
                wider = max(n, wanted.get(sink.topic, (0, {}))[0])
                wanted[sink.topic] = (wider, dict(REPARTITION_CONFIGS))
            elif sink.topic not in counts and sink.partitions:
                wanted[sink.topic] = (sink.partitions, {})
            elif sink.topic not in counts:
                raise TopicError(f"sink topic {sink.topic!r} does not exist; create it or set "
                                 "`partitions:` on the sink so the worker creates it")
        for store in sub.stores:
            wanted[store.changelog_topic] = (n, CHANGELOG_CONFIGS | (changelog_configs or {}))

    if topology.uses_dlq and topology.dlq_topic not in counts:
        wanted[topology.dlq_topic] = (topology.dlq_partitions, {})
    if directory is not None:  # the worker directory of the state API (runtime/serving/directory.py)
        wanted[directory] = (1, {"cleanup.policy": "compact"})

    to_create = []
    for topic, (n, configs) in wanted.items():
        have = counts.get(topic)
        if have is not None:
            if have != n and topic.endswith(("-changelog", "-repartition")):
                raise TopicError(f"internal topic {topic!r} has {have} partitions, expected {n} "
                                 "(the input's partition count changed: reset the application)")
            continue
        if not create:
            raise TopicError(f"topic {topic!r} does not exist and create_topics is off")
        to_create.append(NewTopic(topic, n, replication_factor, config=configs))
    if to_create:
        for topic, fut in admin.create_topics(to_create, operation_timeout=30).items():
            try:
                fut.result()
                log.info("created topic", extra={"topic": topic})
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise TopicError(f"cannot create topic {topic!r}: {exc.args[0].str()}") from None
        counts = _await_topics(admin, [t.topic for t in to_create])
    check_copartitioning(topology, counts)
    return counts


def _await_topics(admin: AdminClient, topics: list[str], timeout: float = 30.0) -> dict[str, int]:
    """Partition counts once the broker's metadata shows every topic just created: a created
    topic reaches the metadata cache asynchronously (Apache Kafka answers CreateTopics from
    the controller before its broker has applied the new record)."""
    deadline = time.monotonic() + timeout
    while True:
        counts = partition_counts(admin)
        missing = [t for t in topics if t not in counts]
        if not missing:
            return counts
        if time.monotonic() > deadline:
            raise TopicError(f"created topic(s) {', '.join(missing)} are not in the cluster "
                             f"metadata after {timeout:.0f}s")
        time.sleep(0.1)


def check_copartitioning(topology: Topology, counts: dict[str, int]) -> None:
    """Per-task table joins read partition p of the stream and of the table in one task."""
    for stream, table, where in topology.copartitioned:
        if counts.get(stream) != counts.get(table):
            raise TopicError(
                f"{where} needs co-partitioned topics: {stream!r} has {counts.get(stream)} "
                f"partitions, {table!r} has {counts.get(table)}. Repartition explicitly (a key_by "
                f"before the join writes the stream to a topic with {counts.get(table)} "
                "partitions) or declare the table `kind: global_table`")


def read_to_end(consumer: Consumer, topic: str, *, from_committed: bool = False,
                missing: str = "does not exist") -> Iterator[Any]:
    """Every record of `topic` from the start (or the consumer group's committed offsets) up
    to the end as it was when the call began; records written meanwhile wait for the next
    read. The consumer needs `enable.partition.eof`. A missing topic raises TopicError
    (`topic <name> <missing>`)."""
    md = consumer.list_topics(topic, timeout=10)
    meta = md.topics.get(topic)
    if meta is None or meta.error is not None:
        raise TopicError(f"topic {topic!r} {missing}")
    parts = [TopicPartition(topic, p) for p in sorted(meta.partitions)]
    starts = consumer.committed(parts, timeout=10) if from_committed else parts
    ends: dict[int, int] = {}
    assign = []
    for tp in starts:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)
        start = tp.offset if from_committed and tp.offset >= 0 else low
        if start < high:
            ends[tp.partition] = high
            assign.append(TopicPartition(topic, tp.partition, start if start >= 0 else OFFSET_BEGINNING))
    if not assign:
        return
    consumer.assign(assign)
    idle_since = time.monotonic()
    while ends:
        msgs = consumer.consume(1000, 0.5)
        if not msgs:
            if time.monotonic() - idle_since > 10:
                raise TopicError(f"reading {topic} stalled before its end offsets {ends}")
            continue
        idle_since = time.monotonic()
        for m in msgs:
            p = m.partition()
            if m.error() is not None:
                # the end: transaction markers may sit after the last record, so the end
                # offset itself is never the offset of a record we see
                if m.error().code() == KafkaError._PARTITION_EOF:
                    ends.pop(p, None)
                continue
            if p not in ends:
                continue
            yield m
            if m.offset() + 1 >= ends[p]:
                del ends[p]
