"""`processor savepoint create | inspect`: snapshot a stopped application's state from Kafka.

Offline: the application's consumer group must have no members. Under exactly-once a task's
changelog writes, its outputs and its consumed offsets commit in one transaction, so the
changelogs read `read_committed` to their end hold exactly the state that goes with the
group's committed offsets; the records committed to a repartition topic after its reader's
committed offset are *in flight* (written upstream, not yet consumed) and go into the
savepoint too, or a restore would lose them. A changelog or repartition partition still
behind an open transaction (a worker killed less than its transaction timeout ago) is waited
for: its end is known only once the broker committed or aborted it.

The group must stay empty while the savepoint is read (a worker restarted by an orchestrator
would move the state under it): once everything is read, the group must still have no members,
its committed offsets must be those read and no partition read may have grown past where its
reading ended — or the savepoint is not written.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from processor.graph import Topology
from processor.graph.compat import Verdict, store_reasons
from processor.graph.layout import StoreLayout, state_layout
from processor.runtime.config import WorkerConfig
from processor.runtime.kafka.clients import admin_config, restore_consumer_config
from processor.runtime.kafka.topics import partition_counts
from processor.state.changelog import LAYOUT_KEY, POSITION_KEY
from processor.tools.consumer_group import committed_offsets, describe_member, members_now
from processor.tools.savepoint_format import (
    SavepointError,
    SavepointWriter,
    decode_bytes,
    read_lines,
    read_manifest,
    store_path,
)
from processor.tools.savepoint_sources import cut

OPEN_TXN_WAIT_S = 120.0


def require_stopped(admin: AdminClient, group: str, doing: str) -> None:
    members = len(members_now(admin, group))
    if members:
        raise SavepointError(
            f"application {group!r} has {members} active worker(s): stop them before {doing} "
            f"(a member killed with -9 stays in the group until its session times out)")


def require_unmoved(admin: AdminClient, consumer: Consumer, group: str,
                    committed: dict[tuple[str, int], int],
                    ends: dict[tuple[str, int], int]) -> None:
    """After the reading: the group is still empty, its committed offsets are those read, and
    no partition read has grown since its reading ended; otherwise the application moved."""
    why = "; nothing written (a worker restarted meanwhile? stop it, or scale it to zero, first)"
    members = members_now(admin, group)
    if members:
        names = "; ".join(map(describe_member, members))
        raise SavepointError(f"application {group!r}: {len(members)} worker(s) joined the group "
                             f"while the savepoint was taken: {names}" + why)
    if committed_offsets(admin, group) != committed:
        raise SavepointError(f"application {group!r} committed offsets while the savepoint was "
                             "taken" + why)
    for (topic, part), end in sorted(ends.items()):
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, part), timeout=15)
        if high != end:
            raise SavepointError(f"{topic}[{part}] grew from offset {end} to {high} while the "
                                 "savepoint was taken" + why)


def cluster_id(admin: AdminClient) -> str | None:
    try:
        return admin.describe_cluster(request_timeout=10).result().cluster_id
    except KafkaException:
        return None


def read_partitions(consumer: Consumer, starts: dict[tuple[str, int], int], *,
                    progress: TextIO | None = None, what: str = "",
                    ends: dict[tuple[str, int], int] | None = None) -> Iterator[Any]:
    """Every committed record of each (topic, partition) from its start offset to its end
    (recorded in `ends` when given).

    A partition ends at an EOF at or past the high watermark seen when it was first reached: an
    EOF below it is the last stable offset of an open transaction, whose outcome is waited for
    (at most OPEN_TXN_WAIT_S, then SavepointError)."""
    highs = {}
    for (topic, part), start in starts.items():
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, part), timeout=15)
        if max(start, low) < high:
            highs[(topic, part)] = high
        elif ends is not None:
            ends[(topic, part)] = high
    if not highs:
        return
    consumer.incremental_assign([TopicPartition(t, p, max(starts[(t, p)], 0)) for t, p in highs])
    total = sum(highs[k] - max(starts[k], 0) for k in highs)
    seen, told, blocked_since = 0, time.monotonic(), None
    while highs:
        msgs = consumer.consume(10_000, 0.5)
        for m in msgs:
            key = (m.topic(), m.partition())
            if m.error() is not None:
                if m.error().code() != KafkaError._PARTITION_EOF:
                    raise SavepointError(f"reading {key[0]}[{key[1]}]: {m.error().str()}")
                if key in highs and m.offset() >= highs[key]:
                    del highs[key]
                    if ends is not None:
                        ends[key] = m.offset()
                    consumer.incremental_unassign([TopicPartition(*key)])
                elif key in highs and blocked_since is None:
                    blocked_since = time.monotonic()
                    if progress is not None:
                        print(f"savepoint: {key[0]}[{key[1]}] ends in an open transaction: "
                              "waiting for the broker to commit or abort it", file=progress,
                              flush=True)
                continue
            if key not in highs:
                continue
            seen += 1
            yield m
        if blocked_since is not None and time.monotonic() - blocked_since > OPEN_TXN_WAIT_S:
            names = ", ".join(f"{t}[{p}]" for t, p in sorted(highs))
            raise SavepointError(f"{names}: a transaction stayed open for "
                                 f"{OPEN_TXN_WAIT_S:.0f}s (a worker still running?)")
        if progress is not None and time.monotonic() - told > 2:
            told = time.monotonic()
            print(f"savepoint: {what} {seen}/{total} records", file=progress, flush=True)


def reader(config: WorkerConfig) -> Consumer:
    """A group-less consumer reading committed records only, whatever the guarantee."""
    return Consumer({**restore_consumer_config(config), "isolation.level": "read_committed"})


def _inflight_starts(topology: Topology, counts: dict[str, int],
                     committed: dict[tuple[str, int], int],
                     positions: dict[str, dict[int, int]]) -> dict[tuple[str, int], int]:
    """Per repartition partition, the first offset its reading task has not absorbed: the
    committed offset, or a store's position when ahead of it (as the worker resumes)."""
    starts = {}
    for sub in topology.subtopologies:
        if not sub.source.internal:
            continue
        topic = sub.source.topic
        for part in range(counts.get(topic, 0)):
            known = [positions[s.name][part] for s in sub.stores if part in positions[s.name]]
            stored = min(known) if known and len(known) == len(sub.stores) else -1
            starts[(topic, part)] = max(committed.get((topic, part), -1), stored)
    return starts


def check_recorded_layouts(current: StoreLayout, recorded: dict[int, bytes]) -> None:
    """The layouts a store's changelog records must be readable as the topology's: a savepoint
    taken with the wrong topology file would describe (and restore) the state wrongly."""
    for part, raw in sorted(recorded.items()):
        reasons = [r for r in store_reasons(StoreLayout.from_json(raw), current)
                   if r.verdict > Verdict.COMPATIBLE]
        if reasons:
            raise SavepointError(
                f"store {current.store} (partition {part}) holds state written with another "
                "layout than this topology's: " + "; ".join(r.render() for r in reasons)
                + " (is this the topology the application runs?)")


def create(topology: Topology, topology_path: Path, config: WorkerConfig, to: Path, *,
           progress: TextIO = sys.stderr) -> dict[str, Any]:
    """Write the savepoint of a stopped application; returns its manifest."""
    began = time.monotonic()
    app = topology.name
    admin = AdminClient(admin_config(config))
    counts = partition_counts(admin)  # fails at once, naming the setting, when the broker is unreachable
    require_stopped(admin, app, "taking a savepoint")
    consumer = reader(config)
    stores: dict[str, Any] = {}
    ends: dict[tuple[str, int], int] = {}  # where each partition's reading ended
    positions: dict[str, dict[int, int]] = {}
    layouts = state_layout(topology).stores
    try:
        with SavepointWriter(to) as out:
            for store in topology.stores:
                topic = store.changelog_topic
                if topic not in counts:
                    raise SavepointError(f"changelog {topic!r} does not exist: has application "
                                         f"{app!r} ever run?")
                latest: dict[int, dict[bytes, bytes]] = {p: {} for p in range(counts[topic])}
                marks: dict[int, dict[str, Any]] = {}
                recorded: dict[int, bytes] = {}  # layout records (runtime/tasks/layouts.py)
                starts = {(topic, p): 0 for p in range(counts[topic])}
                read = 0
                for m in read_partitions(consumer, starts, progress=progress, what=topic,
                                         ends=ends):
                    read += 1
                    part, k, v = m.partition(), m.key(), m.value()
                    if k == POSITION_KEY:
                        marks[part] = orjson.loads(v)
                    elif k == LAYOUT_KEY:
                        recorded[part] = v
                    elif v is None:
                        latest[part].pop(k, None)
                    else:
                        latest[part][k] = v
                for part, entries in latest.items():
                    for k, v in entries.items():
                        out.store_entry(store.name, part, k, v)
                check_recorded_layouts(layouts[store.name], recorded)
                positions[store.name] = {p: int(r["position"]) for p, r in marks.items()}
                stores[store.name] = {
                    "changelog": topic, "partitions": counts[topic], "changelog_records_read": read,
                    "entries": {str(p): len(e) for p, e in latest.items()},
                    "layout": layouts[store.name].to_dict(),
                    "position_records": {str(p): marks[p] for p in sorted(marks)}}
            # read after the changelogs: a transaction a killed worker had already committed is
            # complete by now, in its changelog writes and in its offsets alike
            committed = committed_offsets(admin, app)
            inflight: dict[str, Any] = {}
            starts = _inflight_starts(topology, counts, committed, positions)
            for (topic, part), start in starts.items():
                inflight.setdefault(topic, {"partitions": counts[topic], "from_offset": {},
                                            "records": {}})
                inflight[topic]["from_offset"][str(part)] = start
                inflight[topic]["records"][str(part)] = 0
            for m in read_partitions(consumer, starts, progress=progress, what="in-flight",
                                     ends=ends):
                ts_type, ts = m.timestamp()
                out.inflight_record(m.topic(), m.partition(), m.offset(), m.key(), m.value(),
                                    ts if ts_type else None)
                inflight[m.topic()]["records"][str(m.partition())] += 1
            # rescaling needs to know the sources were read to their end (savepoint_sources.py)
            source_cut = cut(consumer, admin, topology.input_topics, counts, committed)
            text = topology_path.read_bytes()
            manifest = {
                "application": app,
                "topology_file": topology_path.name,
                "topology_sha256": hashlib.sha256(text).hexdigest(),
                "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "cluster_id": cluster_id(admin),
                "source_offsets": {
                    t: {"partitions": counts.get(t, 0),
                        "committed": {str(p): committed[(t, p)] for p in range(counts.get(t, 0))
                                      if (t, p) in committed}, **source_cut[t]}
                    for t in topology.input_topics},
                "stores": stores,
                "inflight": inflight,
                "bytes": 0,
            }
            manifest["bytes"] = out.bytes_written
            manifest["seconds"] = round(time.monotonic() - began, 3)
            require_unmoved(admin, consumer, app, committed, ends)
            manifest = out.commit(manifest)
    finally:
        consumer.close()
    return manifest


def summary(manifest: dict[str, Any]) -> str:
    """The lines `create` and `inspect` print about a savepoint."""
    stores = manifest["stores"]
    entries = sum(sum(s["entries"].values()) for s in stores.values())
    parts = sum(s["partitions"] for s in stores.values())
    inflight = sum(sum(t["records"].values()) for t in manifest["inflight"].values())
    lines = [f"savepoint of {manifest['application']!r} ({manifest['topology_file']}, "
             f"format {manifest['format_version']}, {manifest['created_at']}): "
             f"{len(stores)} store(s), {parts} partition(s), {entries} entries, "
             f"{inflight} in-flight record(s), {manifest['bytes']} bytes"]
    for name, s in stores.items():
        lines.append(f"  store {name}: {sum(s['entries'].values())} entries in "
                     f"{s['partitions']} partition(s), changelog {s['changelog']}")
        for part, rec in s["position_records"].items():
            lines.append(f"    partition {part}: {s['entries'][part]} entries, position "
                         f"{rec['position']}" + (", upstream marks" if "upstream" in rec else "")
                         + (", event-time state" if "time" in rec else ""))
    for topic, t in manifest["inflight"].items():
        lines.append(f"  in flight on {topic}: {sum(t['records'].values())} record(s) "
                     f"(per partition {t['records']})")
    for topic, s in manifest["source_offsets"].items():
        lines.append(f"  source {topic}: committed offsets {s['committed']}")
    return "\n".join(lines)


def inspect(root: Path, *, store: str | None = None, partition: int | None = None,
            limit: int | None = None, out: TextIO = sys.stdout) -> int:
    """Print the summary, or with `store` that store's entries (decoded); returns lines shown."""
    manifest = read_manifest(root)
    if store is None:
        print(summary(manifest), file=out)
        return 0
    if store not in manifest["stores"]:
        raise SavepointError(f"no store {store!r} in the savepoint (it has: "
                             f"{', '.join(manifest['stores']) or 'none'})")
    parts = range(manifest["stores"][store]["partitions"])
    if partition is not None:
        if partition not in parts:
            raise SavepointError(f"store {store!r} has partitions 0..{len(parts) - 1}")
        parts = range(partition, partition + 1)
    shown = 0
    for part in parts:
        for line in read_lines(store_path(root, store, part)):
            if limit is not None and shown >= limit:
                return shown
            key, value = decode_bytes(line, "key"), decode_bytes(line, "value")
            print(f"[{part}] {_readable(key)} = {_readable(value)}", file=out)
            shown += 1
    return shown


def _readable(data: bytes | None) -> str:
    if data is None:
        return "null"
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return "0x" + data.hex()
    return text if text.isprintable() else "0x" + data.hex()
