"""The multi-machine guard of restore: a local store whose changelog topic was re-created
(`processor reset` on another machine) or that stands beyond its changelog's end is cleared
and restored from the beginning, with a warning; a store matching its changelog keeps its
checkpoint and resumes from it. Real RocksDB stores, an in-memory changelog."""

from __future__ import annotations

import logging
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING

from processor.runtime.durability.restore import Restorer, stale_reason
from processor.state import RocksStore
from processor.state.store import META_CHANGELOG_ID, META_CHANGELOG_OFFSET, META_POSITION
from tests.unit.runtime.durability.test_restore import COUNTS, _task
from tests.unit.runtime.kafka_fakes import LogConsumer

WARNING = "local store does not match its changelog: cleared, restoring from the beginning"


def test_decision() -> None:
    assert stale_reason(recorded_id="A", current_id="A", start=7) is None
    assert "re-created" in stale_reason(recorded_id="A", current_id="B", start=7)  # type: ignore[operator]
    # an identity unknown on either side (a store from before ids were recorded, a broker
    # without topic ids) decides nothing by itself
    assert stale_reason(recorded_id=None, current_id="B", start=7) is None
    assert stale_reason(recorded_id="A", current_id=None, start=7) is None
    assert stale_reason(recorded_id=None, current_id=None, start=7, seen=7) is None
    assert stale_reason(recorded_id=None, current_id=None, start=7, seen=9) is None
    assert "ends before" in stale_reason(recorded_id=None, current_id=None, start=7, seen=0)  # type: ignore[operator]
    assert stale_reason(recorded_id=None, current_id=None, start=0, seen=0) is None


def _old_store(tmp: Path, *, offset: int, changelog_id: str | None) -> None:
    """A store checkpointed at `offset` of a changelog that no longer exists."""
    store = RocksStore(tmp / "counts")
    meta: dict[str, int | bytes] = {META_CHANGELOG_OFFSET: offset, META_POSITION: 500}
    if changelog_id is not None:
        meta[META_CHANGELOG_ID] = changelog_id.encode()
    store.apply({b"stale": b"9", b"a": b"old"}, meta)
    store.close()


def _restore(tmp: Path, log: list[tuple[bytes, bytes]], ids: dict[str, str]
             ) -> tuple[LogConsumer, RocksStore]:
    consumer = LogConsumer({(COUNTS, 1): log})
    restorer = Restorer(consumer, lambda task: None, changelog_ids=ids)  # type: ignore[arg-type]
    task = _task(tmp, "counts")
    restorer.add(task)  # type: ignore[arg-type]
    for _ in range(100):
        if not restorer.busy:
            break
        restorer.step(2, 0)
    assert not restorer.busy
    return consumer, task.stores["counts"]


def _warned(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == WARNING]


def test_a_recreated_changelog_clears_the_store(tmp_path, caplog) -> None:
    _old_store(tmp_path, offset=3, changelog_id="OLD")
    new_log = [(b"a", b"1"), (b"b", b"2"), (b"c", b"3"), (b"d", b"4"), (b"e", b"5")]
    with caplog.at_level(logging.WARNING, "processor.restore"):
        consumer, store = _restore(tmp_path, new_log, {COUNTS: "NEW"})
    assert consumer.assigns[0] == [(COUNTS, 1, OFFSET_BEGINNING)], "replayed from the start"
    assert dict(store.items()) == dict(new_log), "nothing of the old state is left"
    assert store.position is None and store.changelog_offset == 5
    assert store.changelog_id == "NEW"
    [warning] = _warned(caplog)
    assert (warning.task, warning.store, warning.partition) == ("0_1", "counts", 1)  # type: ignore[attr-defined]
    assert "topic id NEW, the store's OLD" in warning.reason  # type: ignore[attr-defined]


def test_the_same_changelog_resumes_from_the_checkpoint(tmp_path, caplog) -> None:
    _old_store(tmp_path, offset=3, changelog_id="SAME")
    log = [(b"a", b"1"), (b"b", b"2"), (b"a", b"old"), (b"d", b"4")]
    with caplog.at_level(logging.WARNING, "processor.restore"):
        consumer, store = _restore(tmp_path, log, {COUNTS: "SAME"})
    assert consumer.assigns[0] == [(COUNTS, 1, 3)]
    assert dict(store.items()) == {b"stale": b"9", b"a": b"old", b"d": b"4"}
    assert store.position == 500 and not _warned(caplog)


def test_a_store_without_an_identity_records_the_changelogs(tmp_path, caplog) -> None:
    """A store from before identities were recorded: kept (its offset is within the
    changelog), and from now on checked."""
    _old_store(tmp_path, offset=2, changelog_id=None)
    with caplog.at_level(logging.WARNING, "processor.restore"):
        _, store = _restore(tmp_path, [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")], {COUNTS: "ID"})
    assert store.changelog_id == "ID" and store.get(b"stale") == b"9"
    assert not _warned(caplog)


def test_an_offset_beyond_the_changelogs_end_clears_the_store(tmp_path, caplog) -> None:
    """No identity to compare (a broker without topic ids): the new changelog is shorter than
    the store's offset, the consumer goes back to its start, the store is replayed from there."""
    _old_store(tmp_path, offset=10, changelog_id=None)
    with caplog.at_level(logging.WARNING, "processor.restore"):
        _, store = _restore(tmp_path, [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")], {})
    assert dict(store.items()) == {b"a": b"1", b"b": b"2", b"c": b"3"}
    assert store.position is None and store.changelog_offset == 3
    [warning] = _warned(caplog)
    assert "ends before the store's offset 10" in warning.reason  # type: ignore[attr-defined]


def test_an_empty_changelog_below_the_offset_clears_the_store(tmp_path, caplog) -> None:
    _old_store(tmp_path, offset=10, changelog_id=None)
    with caplog.at_level(logging.WARNING, "processor.restore"):
        _, store = _restore(tmp_path, [], {})
    assert list(store.items()) == [] and store.position is None
    assert store.changelog_offset == 0
    assert len(_warned(caplog)) == 1
