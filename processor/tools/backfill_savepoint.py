"""The state a backfill's history left, as a savepoint the live application is restored from.

A batch run over the history ends with its tasks' RocksDB stores written (open windows, totals,
timers). They go into a savepoint directory in the format `savepoint create` writes
(tools/savepoint_format.py), so `savepoint restore` puts them into the application's changelogs
with the positions a live worker resumes from. What differs from a savepoint of a live run is
where each task stands in its input:

- a task reading a source topic resumes at the SWITCH OFFSET of its live partition, not at the
  batch's position (a row number in the files);
- a task reading a repartition topic has nothing in flight (the batch drained its in-memory
  topics) and resumes at the start of the empty topic; it keeps NO upstream marks: the batch's
  are row numbers of the files, and the live source offsets, smaller, would be dropped as
  duplicates of them;
- event-time state is kept as the history left it (a source partition's highest event time,
  a repartition reader's per-upstream watermarks), so windows open at the switch stay open
  and close when live event time passes them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from processor.graph import Topology
from processor.graph.layout import state_layout
from processor.runtime.tasks.task import Task
from processor.tools.savepoint_format import SavepointWriter

Tasks = Mapping[tuple[str, int], Task]


def position_record(task: Task, switch: Mapping[int, int] | None) -> dict[str, Any]:
    """The position record of one batch task's stores (all written at the same checkpoint):
    `switch` is its source topic's switch offsets, None for a repartition reader."""
    store = next(iter(task.stores.values()))
    record: dict[str, Any] = {"position": 0 if switch is None else switch[task.partition]}
    if store.time is not None:
        record["time"] = orjson.loads(store.time)
    return record


def write_batch_savepoint(root: Path, tasks: Tasks, topology: Topology, topology_path: Path,
                          switch: Mapping[str, Mapping[int, int]],
                          backfill: dict[str, Any]) -> dict[str, Any]:
    """Write the savepoint of the batch `tasks` to `root`; returns its manifest. `switch`: per
    source topic, the switch offset of each partition; `backfill`: facts for the manifest."""
    layouts = state_layout(topology).stores
    subs = {sub.id: sub for sub in topology.subtopologies}
    counts = {topic: len(offsets) for topic, offsets in switch.items()}
    stores: dict[str, Any] = {}
    inflight: dict[str, Any] = {}
    with SavepointWriter(root) as out:
        for spec in topology.stores:
            source = subs[spec.subtopology].source
            parts = sorted(p for (topic, p) in tasks if topic == source.topic)
            entries, records = {}, {}
            for p in parts:
                task = tasks[(source.topic, p)]
                n = 0
                for key, value in task.stores[spec.name].items():
                    out.store_entry(spec.name, p, key, value)
                    n += 1
                entries[str(p)] = n
                records[str(p)] = position_record(
                    task, None if source.internal else switch[source.topic])
            stores[spec.name] = {
                "changelog": spec.changelog_topic, "partitions": len(parts),
                "changelog_records_read": 0, "entries": entries,
                "layout": layouts[spec.name].to_dict(), "position_records": records}
        for sub in topology.subtopologies:
            if sub.source.internal:
                parts = sorted(p for (topic, p) in tasks if topic == sub.source.topic)
                inflight[sub.source.topic] = {
                    "partitions": len(parts), "from_offset": {str(p): 0 for p in parts},
                    "records": {str(p): 0 for p in parts}}
        manifest = {
            "application": topology.name,
            "topology_file": topology_path.name,
            "topology_sha256": hashlib.sha256(topology_path.read_bytes()).hexdigest(),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "cluster_id": None,
            "source_offsets": {
                topic: {"partitions": counts[topic],
                        "committed": {str(p): off for p, off in sorted(offsets.items())}}
                for topic, offsets in switch.items()},
            "stores": stores,
            "inflight": inflight,
            "backfill": backfill,
            "bytes": out.bytes_written,
        }
        return out.commit(manifest)
