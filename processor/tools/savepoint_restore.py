"""`processor savepoint restore`: start an application from a savepoint.

This module restores into the savepoint's partition counts; a stream source with another count
hands over to tools/savepoint_rescale_restore.py once the target is checked and its topics made.

The target application (the topology's name: a new one for blue/green) must be pristine: no
members, no committed offsets, its changelog and repartition topics absent or empty; its
stores must read the savepoint's, as they are or migrated (tools/savepoint_migrate.py: fields
appended or removed, stores renamed or dropped on request). Then:

1. its topics are created as a worker would (runtime/kafka/topics.py `ensure_topics`);
2. the in-flight records are produced to its repartition topics, same partition, same
   envelope bytes: the upstream marks inside (`[slot, source offset, seq, value]`) refer to the
   *source* topics' offsets, which do not change, so the readers' de-dup marks stay valid;
3. every store entry goes to its changelog partition, followed by a position record: the
   source-reading tasks keep their position (same source topics, same offsets); a
   repartition-reading task's position is the new offset of the first in-flight record it had
   not absorbed (its old position mapped through the re-produced records' offsets);
   upstream marks and event-time state are kept as they were; a layout record per store
   partition (the target's layout, which the worker checks: runtime/tasks/layouts.py);
4. the group's offsets are committed last (AdminClient): the source topics' to the
   savepoint's, the repartition topics' to where their in-flight records start.

A worker then restores the stores from the changelogs and `_start_input` (runtime/task_manager.py)
resumes each task at its position: nothing is processed twice, nothing skipped. Restore is
not transactional: one that fails part-way leaves a non-pristine application, which a second
restore refuses (reset the application first).
"""

from __future__ import annotations

import bisect
import sys
import time
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, TextIO

import orjson
from confluent_kafka import ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from processor.graph import Topology
from processor.graph.layout import state_layout
from processor.runtime import faults
from processor.runtime.config import WorkerConfig
from processor.runtime.kafka.clients import admin_config, producer_config
from processor.runtime.kafka.produce import produce_when_room
from processor.runtime.kafka.topics import ensure_topics, partition_counts
from processor.state.changelog import LAYOUT_KEY, POSITION_KEY
from processor.tools.consumer_group import committed_offsets
from processor.tools.savepoint import reader, require_stopped
from processor.tools.savepoint_deliveries import Deliveries
from processor.tools.savepoint_format import (
    SavepointError,
    decode_bytes,
    inflight_path,
    read_lines,
    read_manifest,
    store_path,
)
from processor.tools.savepoint_marks import OffsetMap, SlotOffsets, offset_map
from processor.tools.savepoint_migrate import plan_migration
from processor.tools.savepoint_rescale_restore import restore_rescaled
from processor.tools.savepoint_sources import check_consumed, rescaled_sources


def _check_pristine(config: WorkerConfig, admin: AdminClient, topology: Topology,
                    counts: dict[str, int], manifest: dict[str, Any]) -> dict[tuple[str, int], int]:
    """Refuse an application that is not new; returns the end offsets of its existing internal
    topics (all empty): where the records written into them will start."""
    app = topology.name
    require_stopped(admin, app, "restoring into it")
    if committed_offsets(admin, app):
        raise SavepointError(f"application {app!r} has committed offsets: restore only into a "
                             "new application, or reset this one first")
    internal = [s.changelog_topic for s in topology.stores]
    internal += [s.source.topic for s in topology.subtopologies if s.source.internal]
    probe = reader(config)
    ends = {}
    try:
        for topic in internal:
            for p in range(counts.get(topic, 0)):
                low, high = probe.get_watermark_offsets(TopicPartition(topic, p), timeout=15)
                if high > low:
                    raise SavepointError(f"internal topic {topic!r} of {app!r} is not empty "
                                         f"(partition {p}: {high - low} records): restore only "
                                         "into a new application, or reset this one first")
                ends[(topic, p)] = high
    finally:
        probe.close()
    return ends


def _new_position(old: int, sent: list[tuple[int, int]], end: int) -> int:
    """The new offset of the first re-produced record at or after old offset `old`."""
    i = bisect.bisect_left(sent, (old, -1))
    return sent[i][1] if i < len(sent) else end


def without_idle(record: dict[str, Any]) -> dict[str, Any]:
    """A position record without its upstream idle flags. Idleness at the cut says nothing
    about the restored application: kept, the first upstream partition to report would move
    the reader's watermark alone, and the others' records would come late; dropped, every
    partition holds the watermark back until it reports again (an idle one after its source's
    idle_timeout), as the rescaling restore does."""
    time_state = record.get("time")
    if isinstance(time_state, dict) and time_state.get("idle"):
        return {**record, "time": {**time_state, "idle": []}}
    return record


def restore(root: Path, topology: Topology, config: WorkerConfig, *,
            renames: Mapping[str, str] | None = None, drops: Collection[str] = (),
            progress: TextIO = sys.stderr) -> dict[str, Any]:
    """Restore the savepoint at `root` into `topology`'s application, migrating its stores as
    `plan_migration` says (`renames`: savepoint store -> store; `drops`: savepoint stores not
    restored); returns what was written."""
    began = time.monotonic()
    manifest = read_manifest(root)
    migration = plan_migration(manifest, topology, renames, drops)
    admin = AdminClient(admin_config(config))
    counts = partition_counts(admin)
    bases = _check_pristine(config, admin, topology, counts, manifest)
    rescaled = rescaled_sources(manifest, topology, counts)
    if rescaled:  # refuses before any topic is created (savepoint_sources.py)
        for topic in rescaled:
            check_consumed(manifest, topic)
        changed = migration.describe()
        if changed:
            raise SavepointError(
                "this restore would rescale and migrate state at once, which is not supported: "
                + "; ".join(changed) + ". Do it in two restores: this savepoint into an "
                "application of the old topology under another name (rescaled), a savepoint of "
                "that one (it need not run), then that savepoint into this topology")
    counts = ensure_topics(admin, topology, create=True, replication_factor=config.replication_factor,
                           changelog_configs=config.changelog_topic_configs,
                           bootstrap_servers=config.bootstrap_servers, wait_for_sources_s=10)
    if rescaled:  # another source partition count: state moves by key
        return {**restore_rescaled(root, manifest, topology, config, admin, counts, bases,
                                   rescaled, progress=progress), "migrated": []}
    app = topology.name
    producer = Producer(producer_config(config, None))
    reports = Deliveries()
    written = {"records": 0, "bytes": 0}

    def send(topic: str, key: bytes | None, value: bytes | None, partition: int,
             timestamp: int = 0, on_delivery: Any = reports.failed) -> None:
        produce_when_room(producer, topic, value, key, partition=partition, timestamp=timestamp,
                          on_delivery=on_delivery)
        written["records"] += 1
        written["bytes"] += len(key or b"") + len(value or b"")

    # in-flight records first: the repartition readers' positions depend on their new offsets
    group_offsets: list[TopicPartition] = []
    mapped: dict[str, dict[int, tuple[list[tuple[int, int]], int]]] = {}
    readers = {sub.source.topic: sub for sub in topology.subtopologies if sub.source.internal}
    offset_maps: dict[str, dict[int, OffsetMap]] = {}  # by the new name of a repartition topic

    def slot_offsets(topic: str) -> SlotOffsets:
        """How the reader of `topic` sees its feeders' offsets after the restore."""
        ups = readers[topic].source.upstream_topics
        return SlotOffsets.for_reader([(counts[t], offset_maps.get(t) if t in readers else None)
                                       for t in ups])

    def chain_order(saved_topic: str) -> int:
        """Sub-topologies are numbered in creation order: a feeder before its reader."""
        topic = migration.topic(saved_topic)
        return readers[topic].id if topic in readers else -1

    # a chain's feeder topics first: their new offsets go into the next topic's envelopes
    for old_topic in sorted(manifest["inflight"], key=chain_order):
        saved = manifest["inflight"][old_topic]
        topic = migration.topic(old_topic)
        if topic is None:
            continue  # its store was dropped
        envelopes = slot_offsets(topic)
        if counts[topic] != saved["partitions"]:
            raise SavepointError(f"{topic!r} has {counts[topic]} partitions, the savepoint's "
                                 f"{old_topic!r} {saved['partitions']}")
        for part in range(saved["partitions"]):
            base = bases.get((topic, part), 0)
            lines = list(read_lines(inflight_path(root, old_topic, part)))
            track = reports.tracking(topic, part)
            for line in lines:
                value = decode_bytes(line, "value")
                send(topic, decode_bytes(line, "key"),
                     envelopes.envelope(value) if envelopes else value, part,
                     line.get("timestamp") or 0, track)
            producer.flush(60)
            reports.check()
            new = reports.offsets.get((topic, part), [])
            if len(new) != len(lines):
                raise SavepointError(f"{topic}[{part}]: {len(new)} of {len(lines)} in-flight "
                                     "records acknowledged")
            sent = [(int(line["offset"]), n) for line, n in zip(lines, new, strict=True)]
            end = new[-1] + 1 if new else base
            mapped.setdefault(old_topic, {})[part] = (sent, end)
            offset_maps.setdefault(topic, {})[part] = offset_map(
                int(saved["from_offset"][str(part)]), sent, end)
            group_offsets.append(TopicPartition(topic, part, sent[0][1] if sent else base))

    feeds = {s.name: s.subtopology for s in topology.stores}
    changelog_feed = {s.name: sub.source.topic for sub in topology.subtopologies
                      for s in sub.stores}
    internal_input = {sub.id: migration.saved_topic(sub.source.topic)
                      for sub in topology.subtopologies if sub.source.internal}
    told = time.monotonic()
    layouts = state_layout(topology).stores
    for name, plan in migration.stores.items():
        saved = manifest["stores"][plan.source]
        changelog = next(s.changelog_topic for s in topology.stores if s.name == name)
        if counts[changelog] != saved["partitions"]:
            raise SavepointError(f"changelog {changelog!r} has {counts[changelog]} partitions, "
                                 f"the savepoint's store {plan.source!r} {saved['partitions']}")
        for part in range(saved["partitions"]):
            for line in plan.lines(read_lines(store_path(root, plan.source, part))):
                send(changelog, decode_bytes(line, "key"), decode_bytes(line, "value"), part)
                if time.monotonic() - told > 2:
                    told = time.monotonic()
                    print(f"savepoint restore: {written['records']} records written",
                          file=progress, flush=True)
            # the layout the worker checks the restored state against (runtime/tasks/layouts.py)
            send(changelog, LAYOUT_KEY, layouts[name].to_json(), part)
            record = saved["position_records"].get(str(part))
            if record is None:
                continue
            old_topic = internal_input.get(feeds[name])
            if old_topic is not None:  # None: a new repartition topic (no record restored)
                sent, end = mapped[old_topic][part]
                record = {**record, "position": _new_position(int(record["position"]), sent, end)}
                reader_offsets = slot_offsets(changelog_feed[name])
                if reader_offsets and record.get("upstream"):
                    record["upstream"] = reader_offsets.marks(record["upstream"])
            send(changelog, POSITION_KEY, orjson.dumps(without_idle(record)), part)
    producer.flush(120)
    reports.check()
    if producer.flush(0):
        raise SavepointError("restore failed: records still unacknowledged after 120 s")

    for topic, saved in manifest["source_offsets"].items():
        group_offsets += [TopicPartition(topic, int(p), off) for p, off in saved["committed"].items()]
    faults.point("savepoint.restore.before_offsets")
    if group_offsets:
        request = ConsumerGroupTopicPartitions(app, group_offsets)
        admin.alter_consumer_group_offsets([request], request_timeout=30)[app].result()
    return {**written, "seconds": round(time.monotonic() - began, 3),
            "offsets_committed": len(group_offsets), "migrated": migration.describe()}
