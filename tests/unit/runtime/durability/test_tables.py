"""The table follower against an in-memory topic and real table stores: a registration is
ready once every partition reached its end, then keeps following; it resumes from the store's
offsets; registrations sharing a partition each get only what they have not seen."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING

from processor.runtime.durability.tables import TableError, TableFollower
from processor.state.table import TableStore
from tests.unit.runtime.kafka_fakes import LogConsumer

TOPIC = "customers"


def _follower(logs: dict[tuple[str, int], list[tuple[bytes | None, bytes | None]]]
              ) -> tuple[TableFollower, LogConsumer]:
    consumer = LogConsumer(logs)
    return TableFollower(consumer), consumer  # type: ignore[arg-type]


def _steps(follower: TableFollower, n: int = 5, chunk: int = 100) -> None:
    for _ in range(n):
        follower.step(chunk, 0)


def test_ready_once_every_partition_reached_its_end_then_follows(tmp_path):
    follower, consumer = _follower({(TOPIC, 0): [(b"a", b"1"), (b"b", b"2")],
                                    (TOPIC, 1): [(b"c", b"3")]})
    store = TableStore(tmp_path / "t")
    ready: list[str] = []
    updates: list[list[tuple[bytes, bytes | None]]] = []
    follower.add("global:customers", TOPIC, [0, 1], store, on_ready=lambda: ready.append("t"),
                 on_update=updates.append)
    assert consumer.assigns == [[(TOPIC, 0, OFFSET_BEGINNING), (TOPIC, 1, OFFSET_BEGINNING)]]
    assert follower.busy and not follower.ready("global:customers")
    follower.step(100, 0)
    assert ready == ["t"] and not follower.busy and follower.ready("global:customers")
    assert dict(store.items()) == {b"a": b"1", b"b": b"2", b"c": b"3"}
    assert store.offsets() == {0: 2, 1: 1}
    consumer.append(TOPIC, 1, b"c", None)     # a tombstone
    consumer.append(TOPIC, 1, b"d", b"4")
    assert follower.step(100, 0) == 2
    assert dict(store.items()) == {b"a": b"1", b"b": b"2", b"d": b"4"}
    assert updates[-1] == [(b"c", None), (b"d", b"4")], "raw pairs in topic order"
    assert ready == ["t"], "ready once"
    assert follower.status()["global:customers"]["offsets"] == {0: 2, 1: 3}


def test_resumes_from_the_stores_offsets(tmp_path):
    follower, consumer = _follower({(TOPIC, 0): [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")]})
    store = TableStore(tmp_path / "t")
    store.apply({b"a": b"1", b"b": b"2"}, {0: 2})  # what the last run read
    follower.add("t", TOPIC, [0], store, on_ready=lambda: None)
    assert consumer.assigns == [[(TOPIC, 0, 2)]]
    assert follower.step(100, 0) == 1 and follower.ready("t")
    assert store.offsets() == {0: 3}


def test_registrations_sharing_a_partition_each_get_what_they_have_not_seen(tmp_path):
    log = [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")]
    follower, consumer = _follower({(TOPIC, 0): list(log)})
    first, second = TableStore(tmp_path / "first"), TableStore(tmp_path / "second")
    seen: dict[str, list[Any]] = {"first": [], "second": []}
    follower.add("first", TOPIC, [0], first, on_ready=lambda: None,
                 on_update=seen["first"].extend)
    _steps(follower)
    assert follower.ready("first")
    second.apply({b"a": b"1"}, {0: 1})
    follower.add("second", TOPIC, [0], second, on_ready=lambda: None,
                 on_update=seen["second"].extend)
    assert consumer.assigns[-1] == [(TOPIC, 0, 1)], "re-read from the lowest offset needed"
    _steps(follower)
    assert follower.ready("second")
    assert seen["first"] == log, "the re-read is not applied twice"
    assert seen["second"] == log[1:]
    assert dict(second.items()) == dict(first.items()) == dict(log)


def test_removing_the_last_registration_of_a_partition_unassigns_it(tmp_path):
    follower, consumer = _follower({(TOPIC, 0): [(b"a", b"1")]})
    one, two = TableStore(tmp_path / "one"), TableStore(tmp_path / "two")
    follower.add("one", TOPIC, [0], one, on_ready=lambda: None)
    follower.add("two", TOPIC, [0], two, on_ready=lambda: None)
    _steps(follower)
    follower.remove("one")
    assert (TOPIC, 0) in consumer.positions, "still followed for the other registration"
    follower.remove("two")
    follower.remove("never added")  # ignored
    assert consumer.positions == {} and follower.status() == {}
    assert one.get(b"a") == b"1", "the store stays open: its owner closes it"


def test_keyless_records_are_skipped_and_counted(tmp_path, caplog):
    follower, _ = _follower({(TOPIC, 0): [(None, b"x"), (b"a", b"1"), (None, b"y")]})
    store = TableStore(tmp_path / "t")
    updates: list[Any] = []
    follower.add("t", TOPIC, [0], store, on_ready=lambda: None, on_update=updates.extend)
    with caplog.at_level(logging.WARNING, logger="processor.tables"):
        _steps(follower)
    assert dict(store.items()) == {b"a": b"1"} and updates == [(b"a", b"1")]
    assert store.offsets() == {0: 3}, "skipped, not stuck"
    warning = next(r for r in caplog.records if r.msg == "table records without a key skipped")
    assert warning.skipped == 2  # type: ignore[attr-defined]


class _SilentConsumer(LogConsumer):
    """A broker that answers nothing: no record, no EOF."""

    def consume(self, num_messages: int, timeout: float) -> list[Any]:
        return []


def test_bootstrap_times_out_naming_what_is_behind(tmp_path):
    consumer = _SilentConsumer({(TOPIC, 0): [(b"a", b"1")] * 3})
    follower = TableFollower(consumer)  # type: ignore[arg-type]
    follower.add("global:customers", TOPIC, [0], TableStore(tmp_path / "t"), on_ready=lambda: None)
    with pytest.raises(TableError, match=r"topic 'customers' \(global:customers\) partitions "
                                         r"\[0\] still behind: 0 at offset 0 of 3"):
        follower.bootstrap(0.05)
    follower.close()
    assert consumer.closed
