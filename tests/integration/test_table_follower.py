"""TableFollower against the real broker: bootstrap to the end, follow updates, resume from the
stores' offsets, shared partitions, remove, transactions, bootstrap timeout."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from processor.runtime.config import WorkerConfig
from processor.runtime.durability.tables import TableError, TableFollower
from processor.runtime.kafka.clients import restore_consumer_config
from processor.state.table import TableStore
from processor.tools.generator import create_topic

pytestmark = pytest.mark.integration

Record = tuple[bytes | None, bytes | None, int]  # key, value (None: tombstone), partition


def _follower(bootstrap: str) -> TableFollower:
    cfg = WorkerConfig(bootstrap_servers=bootstrap, processing_guarantee="exactly_once")
    return TableFollower(Consumer(restore_consumer_config(cfg)))


def _produce(bootstrap: str, topic: str, records: list[Record]) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True})
    for key, value, partition in records:
        p.produce(topic, key=key, value=value, partition=partition)
    assert p.flush(30) == 0


def _latest(records: list[Record], partitions: set[int]) -> dict[bytes, bytes]:
    out: dict[bytes, bytes | None] = {}
    for key, value, partition in records:
        if partition in partitions and key is not None:
            out[key] = value
    return {k: v for k, v in out.items() if v is not None}


def _records(seed: int, n_keys: int = 30, rounds: int = 3) -> list[Record]:
    """Every key on a fixed partition, updated `rounds` times, every 4th deleted at the end;
    plus a keyless record a table must skip."""
    out: list[Record] = []
    for r in range(rounds):
        for i in range(n_keys):
            out.append((b"k%02d" % i, b"v%d-%d-%d" % (seed, r, i), i % 3))
    out += [(b"k%02d" % i, None, i % 3) for i in range(0, n_keys, 4)]
    out.append((None, b"no key", 0))
    return out


def _step_until(follower: TableFollower, done: Callable[[], bool], timeout: float = 20) -> int:
    applied = 0
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "the follower did not catch up"
        applied += follower.step(10_000, 0.5)
    return applied


class Counter:
    def __init__(self) -> None:
        self.ready = 0
        self.pairs: list[tuple[bytes, bytes | None]] = []

    def on_ready(self) -> None:
        self.ready += 1

    def on_update(self, pairs: list[tuple[bytes, bytes | None]]) -> None:
        self.pairs.extend(pairs)


@pytest.fixture
def topic(broker, unique) -> str:
    name = f"table-{unique}"
    create_topic(broker.bootstrap, name, 3)
    return name


def test_bootstrap_follow_and_resume(broker, topic, tmp_path: Path):
    first = _records(seed=1)
    _produce(broker.bootstrap, topic, first)
    store_a, store_b = TableStore(tmp_path / "a"), TableStore(tmp_path / "b")
    a, b = Counter(), Counter()
    follower = _follower(broker.bootstrap)
    follower.add("customers/0+2", topic, [0, 2], store_a, a.on_ready, a.on_update)
    follower.add("customers/1", topic, [1], store_b, b.on_ready)
    assert follower.busy and not follower.ready("customers/1")
    follower.bootstrap(30)
    assert not follower.busy and follower.ready("customers/0+2") and follower.ready("customers/1")
    assert (a.ready, b.ready) == (1, 1)
    assert dict(store_a.items()) == _latest(first, {0, 2})
    assert dict(store_b.items()) == _latest(first, {1})
    assert store_a.get(b"k00") is None  # tombstoned
    # on_update saw every keyed record of partitions 0 and 2, in order per partition
    assert len(a.pairs) == sum(1 for k, _, p in first if p in (0, 2) and k is not None)
    assert [kv for kv in a.pairs if kv[0] == b"k02"] == [
        (k, v) for k, v, _ in first if k == b"k02"]

    # follow: updates and tombstones after the bootstrap
    second = [(b"k%02d" % i, b"new-%d" % i, i % 3) for i in range(0, 30, 2)]
    second += [(b"k01", None, 1), (b"k05", None, 2), (b"k40", b"fresh", 1)]
    _produce(broker.bootstrap, topic, second)
    everything = first + second
    _step_until(follower, lambda: dict(store_a.items()) == _latest(everything, {0, 2})
                and dict(store_b.items()) == _latest(everything, {1}))
    assert (a.ready, b.ready) == (1, 1)  # later EOFs are not bootstraps
    assert follower.step(10_000, 0.2) == 0  # nothing new
    follower.close()
    offsets = store_a.offsets()
    assert set(offsets) == {0, 2}
    store_a.close()
    store_b.close()

    # restart: only records written since are read
    third = [(b"k%02d" % i, b"third-%d" % i, i % 3) for i in range(30) if i % 3 != 1]
    _produce(broker.bootstrap, topic, third)
    store_a = TableStore(tmp_path / "a")
    assert store_a.offsets() == offsets
    again, c = _follower(broker.bootstrap), Counter()
    again.add("customers/0+2", topic, [0, 2], store_a, c.on_ready, c.on_update)
    again.bootstrap(30)
    assert c.ready == 1
    assert len(c.pairs) == len(third) == again.status()["customers/0+2"]["records"]
    assert dict(store_a.items()) == _latest(first + second + third, {0, 2})
    again.close()
    store_a.close()


def test_two_registrations_on_one_partition_and_remove(broker, topic, tmp_path: Path):
    _produce(broker.bootstrap, topic, [(b"a", b"1", 0), (b"b", b"1", 0), (b"a", b"2", 0)])
    s1, s2 = TableStore(tmp_path / "one"), TableStore(tmp_path / "two")
    one, two = Counter(), Counter()
    follower = _follower(broker.bootstrap)
    follower.add("sub0/customers", topic, [0], s1, one.on_ready, one.on_update)
    follower.bootstrap(30)
    assert dict(s1.items()) == {b"a": b"2", b"b": b"1"}
    # a second registration joins the partition already read to its end: it still bootstraps
    # from its own (empty) store, and the first one sees nothing twice
    follower.add("sub1/customers", topic, [0], s2, two.on_ready, two.on_update)
    assert follower.busy
    follower.bootstrap(30)
    assert (one.ready, two.ready) == (1, 1)
    assert dict(s2.items()) == {b"a": b"2", b"b": b"1"}
    assert len(one.pairs) == 3 and len(two.pairs) == 3

    _produce(broker.bootstrap, topic, [(b"c", b"1", 0), (b"b", None, 0)])
    _step_until(follower, lambda: len(one.pairs) == 5 and len(two.pairs) == 5)
    assert dict(s1.items()) == dict(s2.items()) == {b"a": b"2", b"c": b"1"}

    follower.remove("sub0/customers")  # the other registration keeps the partition
    _produce(broker.bootstrap, topic, [(b"d", b"1", 0)])
    _step_until(follower, lambda: s2.get(b"d") == b"1")
    assert s1.get(b"d") is None and len(one.pairs) == 5
    with pytest.raises(KeyError):
        follower.ready("sub0/customers")

    follower.remove("sub1/customers")  # the last one: unassigned, nothing to read
    follower.remove("sub1/customers")  # removing twice is harmless
    _produce(broker.bootstrap, topic, [(b"e", b"1", 0)])
    time.sleep(0.5)
    assert follower.step(10_000, 0.5) == 0
    assert s2.get(b"e") is None and not follower.busy
    follower.close()
    s1.close()
    s2.close()


def test_transactional_records_are_visible_and_markers_skipped(broker, topic, tmp_path: Path):
    p = Producer({"bootstrap.servers": broker.bootstrap,
                  "transactional.id": f"table-test-{uuid.uuid4().hex}"})
    p.init_transactions(30)
    p.begin_transaction()
    p.produce(topic, key=b"aborted", value=b"x", partition=0)
    p.flush(30)
    p.abort_transaction(30)
    for i in range(3):
        p.begin_transaction()
        p.produce(topic, key=b"k", value=b"committed-%d" % i, partition=0)
        p.produce(topic, key=b"k%d" % i, value=b"v", partition=0)
        p.commit_transaction(30)
    store, counter = TableStore(tmp_path / "tx"), Counter()
    follower = _follower(broker.bootstrap)
    follower.add("global:rules", topic, [0], store, counter.on_ready, counter.on_update)
    follower.bootstrap(30)
    assert store.get(b"k") == b"committed-2"
    assert {store.get(b"k%d" % i) for i in range(3)} == {b"v"}
    if broker.isolates_aborted:
        assert store.get(b"aborted") is None
    # the stored offset is the end (past the last commit marker), not the last record + 1
    last_record = 1 + 3 * 2 + (1 if broker.isolates_aborted else 0)
    end = follower.consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
    assert store.offsets()[0] == end >= last_record
    follower.close()
    store.close()


def test_bootstrap_timeout_names_topic_and_partitions(broker, unique, tmp_path: Path):
    missing = f"no-such-table-{unique}"
    store = TableStore(tmp_path / "missing")
    follower = _follower(broker.bootstrap)
    follower.add("global:ghost", missing, [0, 1], store, lambda: None)
    started = time.monotonic()
    with pytest.raises(TableError, match=rf"'{missing}'.*partitions \[0, 1\]"):
        follower.bootstrap(1.0)
    assert time.monotonic() - started < 10
    follower.close()
    store.close()


def test_step_is_a_no_op_without_registrations(broker):
    follower = _follower(broker.bootstrap)
    started = time.perf_counter()
    assert follower.step(10_000, 5.0) == 0  # returns at once: nothing to consume
    assert time.perf_counter() - started < 0.1
    assert not follower.busy
    follower.close()
