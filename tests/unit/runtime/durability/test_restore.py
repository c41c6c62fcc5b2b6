"""The restorer against an in-memory changelog and real RocksDB stores: a store is read from
its recorded changelog offset to the end in chunks, position records become store metadata
(not data), a task is restored once all its stores are, and progress is reported per chunk.
(test_restore_open_transaction.py beside it covers an EOF held back by an open
transaction.)"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING

from processor.runtime.durability.restore import Restorer
from processor.state import POSITION_KEY, RocksStore, encode_position
from tests.unit.runtime.kafka_fakes import LogConsumer

COUNTS, TOTALS = "app-counts-changelog", "app-totals-changelog"


@dataclass
class _Task:
    stores: dict[str, RocksStore]
    changelogs: dict[str, str]
    id: str = "0_1"
    partition: int = 1


def _task(tmp: Path, *names: str) -> _Task:
    topics = {"counts": COUNTS, "totals": TOTALS}
    return _Task({n: RocksStore(tmp / n) for n in names}, {n: topics[n] for n in names})


@dataclass
class _Run:
    consumer: LogConsumer
    restorer: Restorer
    restored: list[Any] = field(default_factory=list)
    progress: list[list[tuple[str, int, int, int | None]]] = field(default_factory=list)
    applied: list[int] = field(default_factory=list)


def _restorer(logs: dict[tuple[str, int], list[tuple[bytes | None, bytes | None]]]) -> _Run:
    consumer = LogConsumer(logs)
    restored: list[Any] = []
    run = _Run(consumer, Restorer(consumer, restored.append), restored)  # type: ignore[arg-type]
    run.restorer.on_progress = run.progress.append
    run.restorer.hooks.append(run.applied.append)
    return run


def _until_idle(run: _Run, chunk: int) -> int:
    steps = 0
    while run.restorer.busy:
        run.restorer.step(chunk, 0)
        steps += 1
        assert steps < 100
    return steps


def test_reads_the_changelog_to_its_end_in_chunks(tmp_path):
    log = [(b"a", b"1"), (b"b", b"2"), (b"a", b"3"), (b"b", None), (b"c", b"4")]
    run = _restorer({(COUNTS, 1): log})
    task = _task(tmp_path, "counts")
    run.restorer.add(task)  # type: ignore[arg-type]
    assert run.consumer.assigns == [[(COUNTS, 1, OFFSET_BEGINNING)]], "a new store replays all"
    assert run.restorer.busy and run.restored == []
    assert _until_idle(run, chunk=2) == 3  # 2 + 2 + (1 + EOF)
    store = task.stores["counts"]
    assert dict(store.items()) == {b"a": b"3", b"c": b"4"}, "last write wins, None deletes"
    assert store.changelog_offset == 5
    assert run.restored == [task] and run.consumer.positions == {}, "finished and unassigned"
    assert run.applied == [2, 2, 1]


def test_position_records_become_store_metadata(tmp_path):
    upstream, time_state = b'{"0":[7,0]}', b'{"wm":1000}'
    log = [(b"a", b"1"), (POSITION_KEY, encode_position(41)),
           (b"a", b"2"), (POSITION_KEY, encode_position(57, upstream, time_state))]
    run = _restorer({(COUNTS, 1): log})
    task = _task(tmp_path, "counts")
    run.restorer.add(task)  # type: ignore[arg-type]
    _until_idle(run, chunk=100)
    store = task.stores["counts"]
    assert dict(store.items()) == {b"a": b"2"}, "a position record is not data"
    assert store.position == 57, "input offsets the restored state already holds"
    assert orjson.loads(store.upstream or b"") == {"0": [7, 0]}
    assert orjson.loads(store.time or b"") == {"wm": 1000}


def test_resumes_from_the_stores_recorded_changelog_offset(tmp_path):
    log = [(b"a", b"1"), (b"b", b"2"), (b"c", b"3"), (b"d", b"4")]
    run = _restorer({(COUNTS, 1): log})
    task = _task(tmp_path, "counts")
    task.stores["counts"].apply({b"a": b"1", b"b": b"2"}, {"changelog_offset": 2})
    run.restorer.add(task)  # type: ignore[arg-type]
    assert run.consumer.assigns == [[(COUNTS, 1, 2)]]
    _until_idle(run, chunk=100)
    assert run.applied == [2], "only the tail is read"
    assert dict(task.stores["counts"].items()) == {b"a": b"1", b"b": b"2", b"c": b"3", b"d": b"4"}
    assert task.stores["counts"].changelog_offset == 4


def test_a_task_is_restored_once_all_its_stores_are(tmp_path):
    run = _restorer({(COUNTS, 1): [(b"a", b"1")],
                     (TOTALS, 1): [(b"x", b"1"), (b"y", b"2"), (b"z", b"3")]})
    task = _task(tmp_path, "counts", "totals")
    run.restorer.add(task)  # type: ignore[arg-type]
    run.restorer.step(2, 0)  # counts: record + EOF; totals: nothing yet (the chunk is full)
    assert run.restored == [] and run.restorer.waiting == {"0_1": 1}
    _until_idle(run, chunk=2)
    assert run.restored == [task], "called once, after the last store"
    assert dict(task.stores["totals"].items()) == {b"x": b"1", b"y": b"2", b"z": b"3"}


def test_progress_per_store_partition_after_every_chunk(tmp_path):
    run = _restorer({(COUNTS, 1): [(b"k%d" % i, b"v") for i in range(6)]})
    task = _task(tmp_path, "counts")
    run.restorer.add(task)  # type: ignore[arg-type]
    run.restorer.step(4, 0)
    assert run.progress[-1] == [("counts", 1, 4, 6)], "(store, partition, restored, total)"
    assert run.restorer.progress() == [("counts", 1, 4, 6)]
    run.restorer.step(4, 0)
    assert run.progress[-1] == [], "nothing left restoring"


def test_removing_a_task_stops_its_restore(tmp_path):
    run = _restorer({(COUNTS, 1): [(b"k%d" % i, b"v") for i in range(6)]})
    task = _task(tmp_path, "counts")
    run.restorer.add(task)  # type: ignore[arg-type]
    run.restorer.step(2, 0)
    run.restorer.remove(task)  # type: ignore[arg-type]
    assert not run.restorer.busy and run.consumer.positions == {} and run.restorer.waiting == {}
    assert run.restorer.step(2, 0) == 0 and run.restored == []
    assert task.stores["counts"].changelog_offset == 2, "kept what it applied: resumes there"
