"""`processor backfill`: run a topology over its history, then hand over to the live topic.

One command, idempotent: rerun it after a crash at any point and it finishes the hand-over,
never writing the history's outputs twice. The steps:

1. the switch offsets of each live partition (tools/backfill_switch.py);
2. a batch run over the history files, rows before the switch time only, with as many
   partitions as the live topic (batch task p holds the keys live task p will own), and
   without the end-of-input watermark: windows open at the switch stay open;
3. before its outputs commit: the tasks' stores written as a savepoint under the state dir
   (tools/backfill_savepoint.py), and a marker (tools/backfill_marker.py) added to the
   outputs' transaction;
4. the transaction commits (outputs and marker, or neither);
5. the savepoint is restored into the application (tools/savepoint_restore.py), which commits
   the group's offsets last, at the switch offsets.

A rerun reads where the last one stopped: the group has offsets -> done; the marker but no
offsets -> the restore did not finish: the application is reset and the kept savepoint
restored again (tools/reset_savepoint.py); no marker -> the transaction never committed (no
outputs exist): start over. `processor run` then continues live with the state.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from processor.errors import ProcessorError
from processor.graph import Topology, build_topology
from processor.runtime import faults
from processor.runtime.batch.engine import BatchRun
from processor.runtime.batch.inputs import FileFeeder
from processor.runtime.batch.outputs import TopicOutputs
from processor.runtime.config import WorkerConfig
from processor.runtime.kafka.clients import admin_config, restore_consumer_config
from processor.runtime.kafka.topics import ensure_topics, partition_counts
from processor.spec import LoadedSpec
from processor.spec.bounded import Bound, BoundedSpec
from processor.spec.topics import SourceSpec
from processor.tools.backfill_marker import ensure_marker_topic, produce_marker, read_markers
from processor.tools.backfill_savepoint import write_batch_savepoint
from processor.tools.backfill_switch import (
    LOOKUP_TIMEOUT_S,
    backfill_identity,
    backfill_sources,
    switch_offsets,
)
from processor.tools.reset import internal_topics
from processor.tools.reset_savepoint import reset_to_savepoint
from processor.tools.savepoint import reader, require_stopped
from processor.tools.savepoint_format import MANIFEST, read_manifest
from processor.tools.savepoint_restore import restore

COORDINATOR_WAIT_S = 30.0
"""How long a broker just started may answer that the group's coordinator is not ready."""
_COORDINATOR_MOVING = {KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_NOT_AVAILABLE,
                       KafkaError.COORDINATOR_LOAD_IN_PROGRESS}


@dataclass
class Outcome:
    """What a `backfill` call did: `done` (history run, outputs committed, state restored),
    `already_done` or `resumed` (an earlier run's outputs were committed; its restore redone)."""

    status: str
    identity: str
    savepoint: Path
    switch: dict[str, dict[int, int]] = field(default_factory=dict)
    history_rows: dict[str, int] = field(default_factory=dict)
    after_switch_rows: dict[str, int] = field(default_factory=dict)
    topic_records: dict[str, int] = field(default_factory=dict)
    restored_records: int = 0
    batch_seconds: float = 0.0
    restore_seconds: float = 0.0


def history_spec(loaded: LoadedSpec, counts: Mapping[str, int],
                 switch: Mapping[str, dict[int, int]]) -> LoadedSpec:
    """The spec whose backfilled sources read their history: files, with the live topic's
    partition count (rows go to partitions by key as a producer puts them), or their own
    topic from the beginning up to the switch offsets."""
    sources: dict[str, SourceSpec] = {}
    for name, src in loaded.spec.sources.items():
        if src.backfill is not None and src.backfill.file is not None:
            src = src.model_copy(update={"file": src.backfill.file, "backfill": None,
                                         "partitions": counts[src.topic]})
        elif src.backfill is not None:
            src = src.model_copy(update={"backfill": None, "bounded": BoundedSpec(
                start="earliest", end=Bound(offsets=switch[src.topic]))})
        sources[name] = src
    spec = loaded.spec.model_copy(update={"sources": sources})
    return LoadedSpec(spec, loaded.file, loaded.lines, loaded.data)


def backfill(loaded: LoadedSpec, config: WorkerConfig, *, out: TextIO) -> Outcome:
    """Run or finish the backfill of `loaded` (see the module docstring)."""
    topology = build_topology(loaded)
    app = topology.name
    sources = backfill_sources(loaded)
    identity = backfill_identity(loaded, app)
    work = config.state_dir / f"{app}.backfill" / identity
    savepoint = work / "savepoint"
    admin = AdminClient(admin_config(config))
    counts = partition_counts(admin)
    missing = sorted({s.topic for s in sources.values()} - counts.keys())
    if missing:
        raise ProcessorError(f"live topic(s) {', '.join(missing)} do not exist: create them "
                             "first (the history is split into their partition count)")
    ensure_marker_topic(admin, config, app)
    # a run killed inside its transaction left it open: fence and abort it before reading
    fence = TopicOutputs(config, app)
    fence()
    fence.abort()
    markers = read_markers(config, app)
    committed = _committed(config, app, {s.topic: counts[s.topic] for s in sources.values()})
    if identity in markers and committed:
        # the restore committed the group's offsets last: the hand-over is complete
        return Outcome("already_done", identity, savepoint, switch=_switch_of(markers[identity]))
    require_stopped(admin, app, "a backfill")
    if identity in markers:
        return _resume(topology, config, savepoint, identity, markers[identity], out)
    if committed:
        earlier = f" (backfill(s) {', '.join(sorted(markers))} ran before)" if markers else ""
        raise ProcessorError(
            f"application {app!r} has committed offsets{earlier}: a backfill starts an "
            "application; reset it first (`processor reset`) or give the topology a new name")
    return _run(loaded, topology, config, admin, sources, identity, work, out)


def require_backfilled(loaded: LoadedSpec, config: WorkerConfig) -> None:
    """A worker over a topology with `backfill:` sources starts once the backfill handed over
    (the group has committed offsets on their topics): before that it would read the live
    topics from their beginning, and the history would never be joined to them."""
    topics = {s.topic for s in loaded.spec.sources.values() if s.backfill is not None}
    if not topics:
        return
    counts = partition_counts(AdminClient(admin_config(config)))
    present = {t: counts[t] for t in topics if t in counts}
    if not present or _committed(config, loaded.spec.name, present):
        return  # a missing topic: the worker says what to create
    raise ProcessorError(
        f"{loaded.file}: source(s) with `backfill:` and no committed offsets for application "
        f"{loaded.spec.name!r}: run `processor backfill {loaded.file}` first (it reads the "
        "history, then hands over to the live topics at the switch point)")


def _switch_of(marker: dict[str, Any]) -> dict[str, dict[int, int]]:
    return {t: {int(p): o for p, o in offs.items()} for t, offs in marker["switch"].items()}


def _run(loaded: LoadedSpec, topology: Topology, config: WorkerConfig, admin: AdminClient,
         sources: dict[str, SourceSpec], identity: str, work: Path, out: TextIO) -> Outcome:
    app = topology.name
    _require_empty(config, topology, partition_counts(admin))
    counts = ensure_topics(admin, topology, create=True,
                           replication_factor=config.replication_factor,
                           changelog_configs=config.changelog_topic_configs,
                           bootstrap_servers=config.bootstrap_servers, wait_for_sources_s=10)
    shutil.rmtree(work, ignore_errors=True)  # an earlier attempt that never committed
    work.mkdir(parents=True)
    points = {s.topic: s.backfill for s in sources.values()}
    # history in files: the rows before the switch time; in the topic: its offsets before it
    until = {t: b.switch.timestamp for t, b in points.items() if b.file is not None}  # type: ignore[union-attr]
    switch = {s.topic: switch_offsets(admin, name, s.topic, s.backfill.switch)  # type: ignore[union-attr]
              for name, s in sources.items()}
    print(f"backfill {identity} of {app!r}: history "
          + ", ".join(f"{t} before {_iso(at)}" for t, at in until.items())  # type: ignore[arg-type]
          + ", ".join(f"{t} in its topic" for t in points if t not in until)
          + "; live from offsets " + ", ".join(f"{t} {offs}" for t, offs in switch.items()),
          file=out, flush=True)
    run = BatchRun(history_spec(loaded, counts, switch), config, state_dir=work / "batch",
                   until=until)  # type: ignore[arg-type]
    savepoint = work / "savepoint"
    facts = {"identity": identity, "switch": {t: {str(p): o for p, o in offs.items()}
                                              for t, offs in switch.items()},
             "until": until}

    def save_state(tasks: Any) -> None:
        write_batch_savepoint(savepoint, tasks, topology, Path(loaded.file), switch, facts)
        produce_marker(run.topic_outputs(), app, identity, {
            **facts, "application": app, "savepoint": str(savepoint),
            "committed_at": datetime.now(UTC).isoformat(timespec="seconds")})
        faults.point("backfill.before_commit")

    summary = run.run(end_of_input=False, before_commit=save_state)
    faults.point("backfill.committed")
    shutil.rmtree(work / "batch", ignore_errors=True)
    done = restore(savepoint, topology, config)
    after = {t: f.after_until for t, f in run.feeders.items() if isinstance(f, FileFeeder)}
    return Outcome("done", identity, savepoint, switch=switch,
                   history_rows={t: n - after.get(t, 0) for t, n in summary.input_rows.items()},
                   after_switch_rows=after,
                   topic_records=dict(summary.topic_records),
                   restored_records=done["records"], batch_seconds=summary.seconds,
                   restore_seconds=done["seconds"])


def _resume(topology: Topology, config: WorkerConfig, savepoint: Path, identity: str,
            marker: dict[str, Any], out: TextIO) -> Outcome:
    """The outputs were committed, the restore did not finish: redo it from the kept state."""
    if not (savepoint / MANIFEST).is_file():
        raise ProcessorError(
            f"backfill {identity} of {topology.name!r} committed its outputs "
            f"({marker.get('committed_at')}) but its state {savepoint} is not here (another "
            "machine or state dir?): rerun with the --state-dir it ran with")
    if read_manifest(savepoint).get("backfill", {}).get("identity") != identity:
        raise ProcessorError(f"{savepoint}: not the savepoint of backfill {identity}")
    print(f"backfill {identity}: its outputs were committed by an earlier run, which stopped "
          "before the state was restored: resetting the application and restoring again",
          file=out, flush=True)
    done = reset_to_savepoint(topology, config, savepoint, out=out)
    return Outcome("resumed", identity, savepoint, switch=_switch_of(marker),
                   restored_records=done["records"], restore_seconds=done["seconds"])


def _require_empty(config: WorkerConfig, topology: Topology, counts: Mapping[str, int]) -> None:
    """The application's changelog and repartition topics hold nothing (a new application)."""
    probe = reader(config)
    try:
        for topic in internal_topics(topology, delete_dlq=False):
            for p in range(counts.get(topic, 0)):
                low, high = probe.get_watermark_offsets(TopicPartition(topic, p), timeout=15)
                if high > low:
                    raise ProcessorError(
                        f"internal topic {topic!r} of {topology.name!r} is not empty: a backfill "
                        "starts an application; reset it first (`processor reset`)")
    finally:
        probe.close()


def _committed(config: WorkerConfig, app: str, partitions: Mapping[str, int]
               ) -> dict[tuple[str, int], int]:
    """The group's committed offsets on the live topics. Asked as a consumer of the group (it
    does not join it): librdkafka's admin offset listing crashes the process on a broker still
    loading its group coordinator, a consumer waits for it."""
    consumer = Consumer({**restore_consumer_config(config), "group.id": app})
    deadline = time.monotonic() + COORDINATOR_WAIT_S
    try:
        while True:
            try:
                answer = consumer.committed([TopicPartition(t, p) for t, n in partitions.items()
                                             for p in range(n)], timeout=LOOKUP_TIMEOUT_S)
                break
            except KafkaException as exc:  # e.g. "not coordinator" while it is being elected
                err = exc.args[0]
                if not (err.retriable() or err.code() in _COORDINATOR_MOVING) \
                        or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    finally:
        consumer.close()
    return {(tp.topic, tp.partition): tp.offset for tp in answer
            if tp.error is None and tp.offset >= 0}


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
