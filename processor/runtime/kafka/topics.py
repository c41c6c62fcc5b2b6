"""Create the topics a topology needs (changelogs, repartition topics, sinks, ...); read one to its end.

A source topic's partition count is the application's parallelism, a user's choice: the worker
creates a missing one only when the topology declares it (`partitions:`) and the setting
`create_source_topics` allows; otherwise it waits for it, naming both ways to make it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    TopicCollection,
    TopicPartition,
)
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


CREATE_SOURCES = ("create_source_topics: true (PROCESSOR_CREATE_SOURCE_TOPICS=true, "
                  "--create-source-topics)")


def create_command(topic: str, bootstrap_servers: str, partitions: int | None = None) -> str:
    """The command line that creates a missing topic (`processor topics`, processor/tools), with
    the partition count the topology declares for it, else 1."""
    return (f"processor topics create {topic} --partitions {partitions or 1} "
            f"--bootstrap-servers {bootstrap_servers}")


@dataclass(frozen=True)
class SourcePlan:
    """The missing source topics, as the broker's partition counts show them."""

    create: dict[str, int]  # declared and allowed: the worker creates them with that count
    waiting: list[str]      # the others: waited for, then the worker exits


def plan_sources(topics: list[str], declared: dict[str, int], counts: dict[str, int], *,
                 create: bool) -> SourcePlan:
    """Which of `topics` (a topology's input topics) the worker creates, with how many
    partitions, and which it waits for; existing topics are left as they are."""
    missing = [t for t in topics if t not in counts]
    made = {t: declared[t] for t in missing if create and t in declared}
    return SourcePlan(made, [t for t in missing if t not in made])


def partition_mismatches(topics: list[str], declared: dict[str, int],
                         counts: dict[str, int]) -> list[tuple[str, int, int]]:
    """(topic, partitions on the broker, declared) of the existing topics that differ."""
    return [(t, counts[t], declared[t]) for t in topics
            if t in counts and t in declared and counts[t] != declared[t]]


def missing_sources(missing: list[str], declared: dict[str, int], *, create: bool,
                    bootstrap_servers: str) -> tuple[str, str]:
    """(the warning while waiting, the error once the wait is over) for source topics the
    worker does not create: both say the command that creates them and the other way out."""
    names = ", ".join(missing)
    how = "; ".join(create_command(t, bootstrap_servers, declared.get(t)) for t in missing)
    undeclared = [t for t in missing if t not in declared]
    if undeclared and create:
        other = (f"or declare `partitions:` on the source of {', '.join(undeclared)} for the "
                 "worker to create them (create_source_topics is on)")
    elif undeclared:
        other = (f"or declare `partitions:` on the source of {', '.join(undeclared)} and set "
                 f"{CREATE_SOURCES} for the worker to create them")
    else:
        other = f"or set {CREATE_SOURCES} for the worker to create them as declared"
    choose = " (choose the partition count: the tasks' parallelism)" if undeclared else ""
    return (f"waiting for source topic(s) {names}: create them with {how}, {other}",
            f"source topic(s) {names} do not exist: create them{choose}, {other}. "
            f"The command: {how}")


def partition_counts(admin: AdminClient, timeout: float = 10.0) -> dict[str, int]:
    try:
        md = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise TopicError(f"cannot read cluster metadata: {exc.args[0].str()} "
                         "(is bootstrap_servers right and the broker up?)") from None
    return {name: len(t.partitions) for name, t in md.topics.items() if t.error is None}


def ensure_topics(admin: AdminClient, topology: Topology, *, create: bool,
                  create_sources: bool = False, replication_factor: int = -1,
                  wait_for_sources_s: float = 30.0, directory: str | None = None,
                  changelog_configs: dict[str, str] | None = None,
                  bootstrap_servers: str = "<host:port>") -> dict[str, int]:
    """Make sure every source, internal and sink topic exists; returns partition counts by topic.

    Internal topics get as many partitions as the topic feeding them, so partition N of the
    input, its repartition topic and its changelog all belong to the same task number.
    `changelog_configs` (the worker's `changelog_topic_configs`) override the changelog
    defaults of topics created here; existing topics keep theirs. A missing source topic is
    created with its declared `partitions:` when `create_sources`; the others are waited for
    `wait_for_sources_s` (see `missing_sources`). An existing source topic is never altered: a
    count other than the declared one is logged, and the broker's count is the one used.
    """
    declared = topology.source_partitions
    deadline = time.monotonic() + wait_for_sources_s
    told = 0.0
    while True:
        counts = partition_counts(admin)
        plan = plan_sources(topology.input_topics, declared, counts, create=create_sources)
        if not plan.waiting:
            break
        waiting, error = missing_sources(plan.waiting, declared, create=create_sources,
                                         bootstrap_servers=bootstrap_servers)
        if time.monotonic() > deadline:
            raise TopicError(error)
        if time.monotonic() - told >= 10.0:  # said once, then every 10 s while waiting
            told = time.monotonic()
            log.warning(waiting, extra={"topics": plan.waiting})
        time.sleep(1.0)
    sizes = counts | plan.create  # what the internal topics' counts follow

    wanted: dict[str, tuple[int, dict[str, str]]] = {}
    for sub in topology.subtopologies:
        # sub-topologies are numbered in creation order, so a repartition topic's feeder
        # is always seen before the sub-topology reading it
        n = sizes.get(sub.source.topic) or wanted.get(sub.source.topic, (0, {}))[0]
        for sink in sub.sinks:
            if sink.internal and sink.partitions_like is not None:
                # feeds a per-task table join: partition p must meet table partition p
                wanted[sink.topic] = (sizes[sink.partitions_like], dict(REPARTITION_CONFIGS))
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

    to_create = [NewTopic(t, n, replication_factor) for t, n in plan.create.items()]
    for topic, (n, configs) in wanted.items():
        if topic in plan.create:  # a sink writing to a source topic created above
            continue
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
                if topic in plan.create:
                    log.info("created source topic", extra={"topic": topic,
                                                            "partitions": plan.create[topic]})
                else:
                    log.info("created topic", extra={"topic": topic})
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise TopicError(f"cannot create topic {topic!r}: {exc.args[0].str()}") from None
        counts = _await_topics(admin, [t.topic for t in to_create])
    for topic, have, n in partition_mismatches(topology.input_topics, declared, counts):
        log.warning(f"source topic {topic} has {have} partitions, the topology declares {n}: "
                    "the worker uses the broker's count (correct `partitions:` on the source)",
                    extra={"topic": topic, "partitions": have, "declared": n})
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


NO_TOPIC_ID = "AAAAAAAAAAAAAAAAAAAAAA"  # the all-zero Uuid: a broker without topic ids


def topic_ids(admin: AdminClient, topics: list[str], timeout: float = 10.0, *,
              on_error: Callable[[str, KafkaException], None] | None = None) -> dict[str, str]:
    """Each topic's id (KIP-516, Kafka >= 2.8), which tells a topic from one re-created under
    its name; topics without one, or not answered (`on_error` hears why), are left out."""
    if not topics:
        return {}
    try:
        futures = admin.describe_topics(TopicCollection(topics), request_timeout=timeout)
    except KafkaException:
        return {}
    ids = {}
    for topic, fut in futures.items():
        try:
            uid = str(fut.result().topic_id)
        except KafkaException as exc:
            if on_error is not None:
                on_error(topic, exc)
            continue
        if uid != NO_TOPIC_ID:
            ids[topic] = uid
    return ids
