"""`processor reset`: make an application reprocess its input from a chosen point (Kafka
Streams' application reset tool, for this engine's topics and state).

An application's position is its consumer group's committed offsets on its stream sources;
its state is the changelog topics, the repartition topics between its sub-topologies and the
workers' local stores. A reset moves the first to the target and deletes the rest, so the next
run rebuilds the state from the input alone. Sinks are never touched (their consumers decide
what re-sent results mean); the dead-letter topic only with `--delete-dlq`. Table, global-table
and broadcast topics are read without the group: they keep no group position and are read
again from their start by a worker whose local state is gone.

A reset under running workers would corrupt state, so it refuses while the group has members
(and the broker refuses an offset change of a non-empty group). A worker on another machine
keeps its local stores: restore notices they belong to the deleted changelogs and clears them
(runtime/durability/restore.py).
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import orjson
from confluent_kafka import (
    ConsumerGroupTopicPartitions,
    IsolationLevel,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec

from processor.errors import ProcessorError
from processor.graph import Topology
from processor.runtime.config import WorkerConfig
from processor.runtime.kafka.clients import admin_config
from processor.runtime.serving.directory import directory_topic
from processor.tools.consumer_group import committed_offsets, group_members
from processor.tools.topics_cli import TIMEOUT_S, broker_error, topic_partitions


@dataclass(frozen=True)
class Target:
    """Where the inputs restart: `earliest`, `latest`, the first record at or after
    `timestamp_ms` (the end of a partition with none), or a savepoint's `offsets` (committed by
    the restore that follows the reset: tools/reset_savepoint.py)."""

    kind: str
    timestamp_ms: int | None = None
    savepoint: str | None = None
    offsets: dict[tuple[str, int], int] | None = None

    def describe(self) -> str:
        if self.kind == "savepoint":
            return f"the offsets of savepoint {self.savepoint}"
        if self.timestamp_ms is None:
            return self.kind
        at = datetime.fromtimestamp(self.timestamp_ms / 1000, UTC).isoformat(timespec="milliseconds")
        return f"the first record at or after {at}"


def parse_target(*, to_latest: bool = False, to_datetime: str | None = None,
                 by_duration_ms: int | None = None, now_ms: int | None = None) -> Target:
    """The target of the flags (at most one; none: earliest). A datetime without a zone is UTC."""
    if to_latest:
        return Target("latest")
    if to_datetime is not None:
        try:
            at = datetime.fromisoformat(to_datetime)
        except ValueError:
            raise ProcessorError(f"--to-datetime {to_datetime!r}: expected an ISO 8601 time, e.g. "
                                 "2026-01-31T12:00:00Z") from None
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        return Target("timestamp", int(at.timestamp() * 1000))
    if by_duration_ms is not None:
        now = int(time.time() * 1000) if now_ms is None else now_ms
        return Target("timestamp", now - by_duration_ms)
    return Target("earliest")


def group_inputs(topology: Topology) -> list[str]:
    """The external topics the consumer group reads (stream sources): the positions to move."""
    return list(dict.fromkeys(s.source.topic for s in topology.subtopologies
                              if not s.source.internal))


def internal_topics(topology: Topology, *, delete_dlq: bool) -> list[str]:
    """The topics holding the application's state and progress: changelogs, repartition
    topics, the worker directory (state API); the dead-letter topic when asked."""
    topics = [s.changelog_topic for s in topology.stores]
    topics += [s.source.topic for s in topology.subtopologies if s.source.internal]
    topics += [e.topic for s in topology.subtopologies for e in s.sinks if e.internal]
    topics.append(directory_topic(topology.name))
    if delete_dlq and topology.dlq_topic:
        topics.append(topology.dlq_topic)
    return list(dict.fromkeys(topics))


def kept_topics(topology: Topology, *, delete_dlq: bool) -> dict[str, str]:
    """Topics a reset leaves alone, with why."""
    kept = {e.topic: "sink" for s in topology.subtopologies for e in s.sinks if not e.internal}
    for t in (*(t for s in topology.subtopologies for t in s.tables), *topology.global_tables,
              *topology.broadcasts):
        kept[t.topic] = ("table input: read without the group, not moved; a table holds "
                         "its latest values")
    if topology.dlq_topic and not delete_dlq:
        kept[topology.dlq_topic] = "dead letters (--delete-dlq deletes them)"
    return kept


@dataclass(frozen=True)
class OffsetMove:
    topic: str
    partition: int
    old: int | None  # the committed offset; None: nothing committed
    new: int


@dataclass
class ResetPlan:
    application: str
    target: str
    moves: list[OffsetMove]
    delete: list[str]  # existing internal topics
    kept: dict[str, str]
    state_dir: Path
    state_exists: bool
    dry_run: bool = False
    # the group's committed offsets on the deleted topics: dropped with them
    dropped_offsets: list[tuple[str, int]] = field(default_factory=list)
    # to a savepoint: the group is deleted, the restore commits the offsets
    delete_group: bool = False

    def render(self) -> str:
        dry = self.dry_run
        head = (f"dry run, nothing changed: reset of {self.application!r}" if dry
                else f"reset {self.application!r}")
        lines = [f"{head} (consumer group {self.application}) to {self.target}"]
        if self.delete_group:
            lines.append(f"consumer group {self.application}: {'to delete' if dry else 'deleted'} "
                         "(a restore goes into an application without committed offsets)")
        setting = "input offsets the restore commits:" if self.delete_group else (
            "input offsets to set:" if dry else "input offsets set:")
        lines.append(setting if self.moves else "input offsets: no input topic exists")
        lines += [f"  {m.topic}[{m.partition}]: {'none' if m.old is None else m.old} -> {m.new}"
                  for m in self.moves]
        lines.append(("topics to delete: " if dry else "topics deleted: ")
                     + (", ".join(self.delete) or "none (none exist)"))
        if self.dropped_offsets:
            lines.append("committed offsets dropped with them: "
                         + ", ".join(f"{t}[{p}]" for t, p in self.dropped_offsets))
        lines += [f"topic kept: {t} ({why})" for t, why in sorted(self.kept.items())]
        state = ("to remove" if dry else "removed") if self.state_exists else "none"
        lines.append(f"local state {self.state_dir}: {state} (workers on other machines clear "
                     "their stores of this application when they restore)")
        return "\n".join(lines)

    def as_json(self) -> bytes:
        data = asdict(self)
        data["state_dir"] = str(self.state_dir)
        return orjson.dumps(data)


def plan_moves(partitions: dict[str, int], committed: dict[tuple[str, int], int],
               targets: dict[tuple[str, int], int]) -> list[OffsetMove]:
    """One move per partition of each input topic (`partitions`: the counts) with a target (a
    savepoint may have none for a partition it never committed)."""
    return [OffsetMove(t, p, committed.get((t, p)), targets[(t, p)])
            for t in sorted(partitions) for p in range(partitions[t]) if (t, p) in targets]


def committed_to_drop(committed: dict[tuple[str, int], int], deleted: list[str]
                      ) -> list[tuple[str, int]]:
    """Committed offsets on deleted topics (Apache Kafka drops them with the topic)."""
    gone = set(deleted)
    return sorted(tp for tp in committed if tp[0] in gone)


class _Group:
    """The broker calls of a reset, each failure one error line."""

    def __init__(self, config: WorkerConfig, group: str) -> None:
        self.config = config
        self.group = group
        self.admin = AdminClient(admin_config(config))

    def _result(self, fut: Any, doing: str) -> Any:
        try:
            return fut.result()
        except KafkaException as exc:
            raise broker_error(exc, self.config, doing) from None

    def refuse_if_active(self) -> None:
        try:
            members = group_members(self.admin, self.group, TIMEOUT_S)
        except KafkaException as exc:
            raise broker_error(exc, self.config,
                               f"cannot describe consumer group {self.group!r}") from None
        if members:
            who = ", ".join(f"{m.member_id} on {m.host.lstrip('/')}" for m in members)
            raise ProcessorError(
                f"consumer group {self.group!r} has {len(members)} active member(s): {who}; "
                "stop every worker of the application before a reset (a reset under running "
                "workers corrupts their state)")

    def committed(self) -> dict[tuple[str, int], int]:
        try:
            return committed_offsets(self.admin, self.group, TIMEOUT_S)
        except KafkaException as exc:
            raise broker_error(exc, self.config,
                               f"cannot read the committed offsets of {self.group!r}") from None

    def targets(self, partitions: dict[str, int], target: Target) -> dict[tuple[str, int], int]:
        if target.kind == "savepoint":
            return {tp: off for tp, off in (target.offsets or {}).items() if tp[0] in partitions}
        tps = [TopicPartition(t, p) for t, n in partitions.items() for p in range(n)]
        if not tps:
            return {}
        ends = self._offsets(tps, OffsetSpec.latest())
        if target.kind == "latest":
            return ends
        if target.kind == "earliest":
            return self._offsets(tps, OffsetSpec.earliest())
        found = self._offsets(tps, OffsetSpec.for_timestamp(target.timestamp_ms))
        return {tp: ends[tp] if off < 0 else off for tp, off in found.items()}

    def _offsets(self, tps: list[TopicPartition], spec: OffsetSpec) -> dict[tuple[str, int], int]:
        futures = self.admin.list_offsets({tp: spec for tp in tps}, request_timeout=TIMEOUT_S,
                                          isolation_level=IsolationLevel.READ_COMMITTED)
        return {(tp.topic, tp.partition): self._result(f, f"cannot list offsets of {tp.topic}").offset
                for tp, f in futures.items()}

    def move(self, moves: list[OffsetMove]) -> None:
        if not moves:
            return
        req = ConsumerGroupTopicPartitions(
            self.group, [TopicPartition(m.topic, m.partition, m.new) for m in moves])
        res = self._result(self.admin.alter_consumer_group_offsets(
            [req], request_timeout=TIMEOUT_S)[self.group],
            f"cannot set the offsets of consumer group {self.group!r} (a worker joined?)")
        failed = [f"{tp.topic}[{tp.partition}]: {tp.error.str()}" for tp in res.topic_partitions
                  if tp.error is not None]
        if failed:
            raise ProcessorError(f"offsets not set for {', '.join(failed)}")

    def delete_group(self) -> None:
        """Delete the (empty) group with its committed offsets; none existing is fine."""
        fut = self.admin.delete_consumer_groups([self.group], request_timeout=TIMEOUT_S)[self.group]
        try:
            fut.result()
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.GROUP_ID_NOT_FOUND:
                raise broker_error(exc, self.config,
                                   f"cannot delete consumer group {self.group!r}") from None

    def delete_topics(self, topics: list[str], timeout_s: float = 60.0) -> None:
        """Delete and wait until the metadata no longer shows them: a worker started next
        must create them anew, not find the old ones still being deleted."""
        if not topics:
            return
        for topic, fut in self.admin.delete_topics(topics, operation_timeout=30).items():
            self._result(fut, f"cannot delete topic {topic!r}")
        deadline = time.monotonic() + timeout_s
        while left := sorted(set(topics) & set(topic_partitions(self.admin, self.config))):
            if time.monotonic() > deadline:
                raise ProcessorError(f"topics still listed {timeout_s:.0f}s after their "
                                     f"deletion: {', '.join(left)}")
            time.sleep(0.2)

    def await_dropped(self, topics: list[str], timeout_s: float = 30.0) -> None:
        """Wait until the group's offsets on the deleted topics are gone (the group coordinator
        drops them after the deletion, asynchronously). A broker that keeps them would start
        the re-created topics' readers there; the Python client has no OffsetDelete call, so
        the error names Kafka's command."""
        deadline = time.monotonic() + timeout_s
        while left := committed_to_drop(self.committed(), topics):
            if time.monotonic() > deadline:
                names = ", ".join(f"{t}[{p}]" for t, p in left)
                raise ProcessorError(
                    f"the broker kept consumer group {self.group!r}'s offsets on the deleted "
                    f"topics ({names}): delete them before a worker starts, e.g. "
                    f"kafka-consumer-groups.sh --bootstrap-server {self.config.bootstrap_servers} "
                    f"--group {self.group} --delete-offsets --topic {left[0][0]}")
            time.sleep(0.2)


def reset(topology: Topology, config: WorkerConfig, target: Target, *, delete_dlq: bool = False,
          dry_run: bool = False, as_json: bool = False, out: TextIO = sys.stdout) -> ResetPlan:
    """Check that no worker runs, plan, and (unless `dry_run`) carry the plan out; prints it."""
    group = _Group(config, topology.name)
    counts = topic_partitions(group.admin, config)
    group.refuse_if_active()
    inputs = {t: counts[t] for t in group_inputs(topology) if t in counts}
    committed = group.committed()
    delete = [t for t in internal_topics(topology, delete_dlq=delete_dlq) if t in counts]
    state_dir = config.state_dir / topology.name
    plan = ResetPlan(topology.name, target.describe(),
                     plan_moves(inputs, committed, group.targets(inputs, target)), delete,
                     {t: why for t, why in kept_topics(topology, delete_dlq=delete_dlq).items()
                      if t in counts}, state_dir, state_dir.exists(),
                     dry_run, committed_to_drop(committed, delete), target.kind == "savepoint")
    if not dry_run:
        if not plan.delete_group:
            group.move(plan.moves)
        group.delete_topics(plan.delete)
        shutil.rmtree(state_dir, ignore_errors=True)
        if plan.delete_group:
            group.delete_group()  # its offsets on the deleted topics go with it
        else:
            group.await_dropped(plan.delete)
    print(plan.as_json().decode() if as_json else plan.render(), file=out)
    return plan
