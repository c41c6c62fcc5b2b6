"""`savepoint restore` into another source partition count: the broker side of rescaling.

tools/savepoint_restore.py checks the target (compatible layouts, a pristine application) and
creates its topics with the new counts (`ensure_topics`: internal topics follow the topic
feeding them), then hands over here when a stream source's partition count is not the
savepoint's. Everything that can refuse does so before the first write: the rescaled sources'
cut (savepoint_sources.py: read to their end, same topic or not), each moved store's
partitioner self-check and the in-flight records' new partitions (savepoint_rescale.py). Then,
as a same-count restore: the in-flight records (their new offsets are the repartition
readers' positions), every store entry to the partition of its key with a layout and a
position record per store partition, the group's offsets last.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import orjson
from confluent_kafka import ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from processor.graph import SubTopology, Topology
from processor.graph.layout import state_layout
from processor.runtime.config import WorkerConfig
from processor.runtime.kafka.clients import producer_config
from processor.runtime.kafka.produce import produce_when_room
from processor.runtime.kafka.topics import topic_ids
from processor.state.changelog import LAYOUT_KEY, POSITION_KEY
from processor.tools.savepoint import reader
from processor.tools.savepoint_deliveries import Deliveries
from processor.tools.savepoint_format import (
    SavepointError,
    decode_bytes,
    inflight_path,
    read_lines,
    store_path,
)
from processor.tools.savepoint_rescale import (
    Entries,
    InflightMove,
    Slots,
    StoreMove,
    merged_source_time,
    merged_upstream_time,
    plan_store,
    redistribute_inflight,
    retired_marks,
)
from processor.tools.savepoint_sources import resume_offsets


def savepoint_entries(root: Path) -> Entries:
    """The entries of a store partition as the savepoint files hold them."""
    def read(store: str, partition: int) -> Iterator[tuple[bytes, bytes | None]]:
        for line in read_lines(store_path(root, store, partition)):
            key = decode_bytes(line, "key")
            if key is None:
                raise SavepointError(f"{store_path(root, store, partition)}: an entry without a key")
            yield key, decode_bytes(line, "value")
    return read


class _Plan:
    """What the rescaled application gets, computed from the savepoint before any write."""

    def __init__(self, root: Path, manifest: dict[str, Any], topology: Topology,
                 counts: dict[str, int], entries: Entries) -> None:
        old_app, app = manifest["application"], topology.name
        self.manifest, self.topology, self.counts = manifest, topology, counts
        self.old_name = {(app + t[len(old_app):] if t.startswith(old_app) else t): t
                         for t in manifest["inflight"]}
        # every topic the target reads, by its name in the target: its count at the savepoint
        self.old_counts = {t: int(s["partitions"]) for t, s in manifest["source_offsets"].items()}
        self.old_counts |= {new: int(manifest["inflight"][old]["partitions"])
                            for new, old in self.old_name.items()}
        layouts = state_layout(topology).stores
        self.stores: dict[str, StoreMove] = {}
        for store in topology.stores:
            saved = manifest["stores"][store.name]
            self.stores[store.name] = plan_store(layouts[store.name], int(saved["partitions"]),
                                                 counts[store.changelog_topic], entries)
        self.inflight: dict[int, InflightMove] = {}
        self.slots: dict[int, tuple[Slots, Slots]] = {}
        for sub in topology.subtopologies:
            if not sub.source.internal:
                continue
            old, new = self.feeder_slots(sub)
            self.slots[sub.id] = (old, new)
            topic = self.old_name[sub.source.topic]
            lines = {p: list(read_lines(inflight_path(root, topic, p)))
                     for p in range(self.old_counts[sub.source.topic])}
            self.inflight[sub.id] = redistribute_inflight(
                lines, counts[sub.source.topic], old.total, lambda line: decode_bytes(line, "key"),
                lambda line: decode_bytes(line, "value"))

    def feeder_slots(self, sub: SubTopology) -> tuple[Slots, Slots]:
        missing = [t for t in sub.source.upstream_topics if t not in self.old_counts]
        if missing:
            raise SavepointError(f"the savepoint does not know the partition count of "
                                 f"{', '.join(missing)} (feeding {sub.source.topic!r})")
        old = Slots(tuple((t, self.old_counts[t]) for t in sub.source.upstream_topics))
        new = Slots(tuple((t, self.counts[t]) for t in sub.source.upstream_topics))
        return old, new

    def old_records(self, sub: SubTopology) -> dict[int, dict[str, Any]]:
        """The sub-topology's position records by old partition (its stores hold the same)."""
        out: dict[int, dict[str, Any]] = {}
        for store in sub.stores:
            for p, record in self.manifest["stores"][store.name]["position_records"].items():
                out.setdefault(int(p), record)
        return out

    def merged(self, sub: SubTopology, q: int) -> list[int]:
        """The old partitions merged into new partition q of a sub-topology."""
        found = {q} if q < self.old_counts[sub.source.topic] else set()
        for store in sub.stores:
            found |= self.stores[store.name].sources.get(q, set())
        if sub.id in self.inflight:
            found |= self.inflight[sub.id].sources.get(q, set())
        return sorted(found)

    def position_records(self, sub: SubTopology, positions: dict[int, int],
                         unchanged: bool) -> dict[int, dict[str, Any]]:
        """Per new partition, the position record of the sub-topology's stores."""
        old = self.old_records(sub)
        if unchanged:  # a source keeping its partition count: as a same-count restore
            return old
        tracked = any("time" in r for r in old.values())
        out = {}
        for q, position in positions.items():
            merged = self.merged(sub, q)
            states = [old.get(p, {}).get("time") for p in merged]
            record: dict[str, Any] = {"position": position}
            if sub.source.internal:
                marks = retired_marks(self.inflight[sub.id].retired.get(q, {}),
                                      {p: r.get("upstream") or {} for p, r in old.items()})
                if marks:
                    record["upstream"] = marks
                if tracked and merged:
                    record["time"] = merged_upstream_time(states, *self.slots[sub.id])
            elif tracked and merged:
                record["time"] = merged_source_time(states)
            out[q] = record
        return out


def restore_rescaled(root: Path, manifest: dict[str, Any], topology: Topology,
                     config: WorkerConfig, admin: AdminClient, counts: dict[str, int],
                     bases: dict[tuple[str, int], int], rescaled: dict[str, tuple[int, int]], *,
                     entries: Entries | None = None, progress: TextIO = sys.stderr
                     ) -> dict[str, Any]:
    """Restore the savepoint at `root` into `topology`, whose sources `rescaled` (topic ->
    (old, new) partition count) changed; `bases`: where the (empty) internal topics end."""
    began = time.monotonic()
    probe = reader(config)
    try:
        ids = topic_ids(admin, list(rescaled))
        resume = {t: resume_offsets(manifest, t, counts[t], ids.get(t), probe)[0] for t in rescaled}
    finally:
        probe.close()
    entries = entries or savepoint_entries(root)
    plan = _Plan(root, manifest, topology, counts, entries)

    producer = Producer(producer_config(config, None))
    reports = Deliveries()
    written = {"records": 0, "bytes": 0}
    told = time.monotonic()

    def send(topic: str, key: bytes | None, value: bytes | None, partition: int,
             timestamp: int = 0, on_delivery: Any = reports.failed) -> None:
        nonlocal told
        produce_when_room(producer, topic, value, key, partition=partition, timestamp=timestamp,
                          on_delivery=on_delivery)
        written["records"] += 1
        written["bytes"] += len(key or b"") + len(value or b"")
        if time.monotonic() - told > 2:
            told = time.monotonic()
            print(f"savepoint restore: {written['records']} records written", file=progress,
                  flush=True)

    group: list[TopicPartition] = []
    positions: dict[int, dict[int, int]] = {}
    for sub in topology.subtopologies:
        topic = sub.source.topic
        if not sub.source.internal:
            continue
        move = plan.inflight[sub.id]
        for q in range(counts[topic]):
            track = reports.tracking(topic, q)
            for key, value, ts in move.records.get(q, []):
                send(topic, key, value, q, ts, track)
        producer.flush(60)
        reports.check()
        starts = positions[sub.id] = {}
        for q in range(counts[topic]):
            new = reports.offsets.get((topic, q), [])
            if len(new) != len(move.records.get(q, [])):
                raise SavepointError(f"{topic}[{q}]: {len(new)} of {len(move.records.get(q, []))} "
                                     "in-flight records acknowledged")
            starts[q] = min(new) if new else bases.get((topic, q), 0)
            group.append(TopicPartition(topic, q, starts[q]))

    layouts = state_layout(topology).stores
    for sub in topology.subtopologies:
        topic = sub.source.topic
        unchanged = not sub.source.internal and topic not in rescaled
        if not sub.source.internal and not unchanged:
            positions[sub.id] = resume[topic]
        records = plan.position_records(sub, positions.get(sub.id, {}), unchanged)
        for store in sub.stores:
            changelog, move = store.changelog_topic, plan.stores[store.name]
            for q, k, v in move.moved(entries):
                send(changelog, k, v, q)
            for q in range(move.new):
                # the layout the worker checks the restored state against (runtime/tasks/layouts.py)
                send(changelog, LAYOUT_KEY, layouts[store.name].to_json(), q)
                if q in records:
                    send(changelog, POSITION_KEY, orjson.dumps(records[q]), q)
    producer.flush(120)
    reports.check()
    if producer.flush(0):
        raise SavepointError("restore failed: records still unacknowledged after 120 s")

    for topic, saved in manifest["source_offsets"].items():
        if topic in resume:
            group += [TopicPartition(topic, q, off) for q, off in resume[topic].items()]
        else:
            group += [TopicPartition(topic, int(p), off) for p, off in saved["committed"].items()]
    if group:
        request = ConsumerGroupTopicPartitions(topology.name, group)
        admin.alter_consumer_group_offsets([request], request_timeout=30)[topology.name].result()
    return {**written, "seconds": round(time.monotonic() - began, 3),
            "offsets_committed": len(group), "rescaled": rescaled,
            "reports_dropped": sum(m.reports_dropped for m in plan.inflight.values())}
