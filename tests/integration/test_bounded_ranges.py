"""Bounded topic ranges on the real broker: a worker over a range by offsets (`--start/--end`)
and by timestamps (`bounded:`) processes exactly the range, closes every window at the end and
exits 0 by itself; killed -9 mid-run and restarted it gives the uninterrupted run's windows,
each once; the batch range reader reads exactly [start, end) over transactional input.

Input: orders on 4 partitions, record i on partition i % 4 with event time (and Kafka
timestamp) T0 + 10 ms * i, so offsets and times are known exactly; records lie beyond every
end. The topology is the GMV dashboard (filter, key_by -> repartition, 1 s tumbling windows).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from processor.errors import ProcessorError
from processor.runtime.config import load_config
from processor.runtime.kafka.range_reader import RangeReader, range_consumer_config
from processor.runtime.kafka.ranges import PartitionRange, resolve_ranges
from processor.spec.bounded import Bound, BoundedSpec
from processor.tools import worker_process
from processor.tools.generator import create_topic
from tests.integration.kafka import WorkerProcess, read_all, topology_file

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000
N = 2_400
PARTITIONS = 4
COUNTRIES = ["de", "fr", "it", "es", "nl"]


def _order(i: int) -> dict[str, Any]:
    return {"user": f"u{i % 37}", "amount": float(1 + i % 50), "status": "paid",
            "country": COUNTRIES[i % len(COUNTRIES)], "ts": T0 + 10 * i}


def _produce(bootstrap: str, topic: str, indexes: range) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True})
    for i in indexes:
        p.produce(topic, key=f"k{i}", value=orjson.dumps(_order(i)),
                  partition=i % PARTITIONS, timestamp=T0 + 10 * i)
    assert p.flush(30) == 0


def _offset(i: int) -> tuple[int, int]:
    """Record i's (partition, offset)."""
    return i % PARTITIONS, i // PARTITIONS


def _oracle(indexes: list[int]) -> dict[tuple[str, int], tuple[int, float]]:
    acc: dict[tuple[str, int], list[float]] = {}
    for i in indexes:
        o = _order(i)
        a = acc.setdefault((o["country"], o["ts"] // 1000 * 1000), [0, 0.0])
        a[0] += 1
        a[1] += o["amount"]
    return {k: (int(n), round(s, 2)) for k, (n, s) in acc.items()}


@pytest.fixture(scope="module")
def orders(broker) -> str:
    topic = f"orders-{uuid.uuid4().hex[:8]}"
    create_topic(broker.bootstrap, topic, PARTITIONS)
    _produce(broker.bootstrap, topic, range(N))
    return topic


class Run:
    """One topology (its own group, output and state) over the shared input topic."""

    def __init__(self, bootstrap: str, tmp: Path, orders: str, bounded: str = "") -> None:
        u = uuid.uuid4().hex[:8]
        self.bootstrap, self.tmp, self.output = bootstrap, tmp, f"gmv-{u}"
        self.topology = topology_file(tmp, "gmv_dashboard.yaml", f"gmv-{u}", {
            "name: gmv-dashboard": f"name: gmv-{u}",
            "topic: orders": f"topic: {orders}" + bounded,
            "topic: gmv-per-second": f"topic: {self.output}",
            "topic: gmv-late-orders": f"topic: gmv-late-{u}",
        })

    def worker(self, *flags: str, env: dict[str, str] | None = None) -> WorkerProcess:
        cmd = [*worker_process.worker_command(self.topology, self.bootstrap, self.tmp / "state",
                                              guarantee="exactly_once", commit_interval="50ms"),
               *flags]
        w = worker_process.WorkerProcess(cmd, self.tmp / f"worker-{uuid.uuid4().hex[:6]}.log",
                                         {**os.environ, **(env or {})})
        WorkerProcess.started.append(w)  # type: ignore[arg-type]  # reaped after the test
        return w

    def windows(self) -> tuple[dict[tuple[str, int], tuple[int, float]], int]:
        """Window results by (country, second), and how many emissions repeated one."""
        seen: dict[tuple[str, int], tuple[int, float]] = {}
        emissions = 0
        for _, value, _ in read_all(self.bootstrap, self.output):
            v = orjson.loads(value)
            seen[(v["country"], v["second"])] = (v["orders"], v["gmv"])
            emissions += 1
        return seen, emissions - len(seen)


# offsets: partition 0 from offset 25; ends 0:400, 1:350, 2:450; partition 3 to its end
OFFSET_FLAGS = ("--start", "orders=0:25", "--end", "orders=0:400,1:350,2:450")


def _in_offset_range(i: int) -> bool:
    p, o = _offset(i)
    return {0: 25 <= o < 400, 1: o < 350, 2: o < 450, 3: True}[p]


def _assert_only_range(run: Run, w: WorkerProcess, want: dict) -> None:
    got, repeats = run.windows()
    assert got == want, (f"missing {sorted(set(want) - set(got))[:5]}, unexpected "
                         f"{sorted(set(got) - set(want))[:5]}")
    assert repeats == 0, f"{repeats} windows emitted twice"
    assert w.find("bounded run finished"), w.log_text()


def test_offset_range_processes_exactly_the_range_and_exits(broker, tmp_path, orders):
    run = Run(broker.bootstrap, tmp_path, orders)
    w = run.worker(*OFFSET_FLAGS)
    assert w.wait(90) == 0, w.log_text()
    # every window closed, including the last ones (watermark to the end of time)
    want = _oracle([i for i in range(N) if _in_offset_range(i)])
    _assert_only_range(run, w, want)
    ended = w.find("bounded run finished")[0]
    assert ended["ended"] == {f"{orders}[0]": 400, f"{orders}[1]": 350, f"{orders}[2]": 450,
                              f"{orders}[3]": N // PARTITIONS}
    assert ended["records"] == sum(_in_offset_range(i) for i in range(N))
    assert all(t["duplicates_dropped"] == 0 for t in w.find("task closed")), \
        "a record was processed twice"


def test_timestamp_range_from_the_topology(broker, tmp_path, orders):
    start, end = T0 + 3_000, T0 + 17_505  # record 300 up to, not including, record 1751
    bounded = f"\n    bounded: {{start: {{timestamp: {start}}}, end: {{timestamp: {end}}}}}"
    run = Run(broker.bootstrap, tmp_path, orders, bounded)
    w = run.worker()
    assert w.wait(90) == 0, w.log_text()
    _assert_only_range(run, w, _oracle(list(range(300, 1751))))
    assert all(t["duplicates_dropped"] == 0 for t in w.find("task closed"))


def test_kill_mid_run_then_restart_gives_the_uninterrupted_windows_once(
        broker, tmp_path, orders):
    broker.require_aborted_isolation("that no window repeats after kill -9")
    run = Run(broker.bootstrap, tmp_path, orders)
    env = {"PROCESSOR_BATCH_SIZE": "100"}
    crashed = run.worker(*OFFSET_FLAGS, env={**env, "PROCESSOR_CRASH_AT":
                                             "checkpoint.after_changelog:3"})
    assert crashed.wait(90) == -9, f"not killed:\n{crashed.log_text()}"
    done = run.worker(*OFFSET_FLAGS, env=env)
    assert done.wait(90) == 0, done.log_text()
    # the uninterrupted run's windows (test_offset_range_...: equal to this oracle), each once
    _assert_only_range(run, done, _oracle([i for i in range(N) if _in_offset_range(i)]))


# -- the range reader (processor batch) ------------------------------------------------------


@pytest.fixture
def transactional(broker) -> Iterator[tuple[str, list[bytes]]]:
    """One partition: 3 committed transactions of 5 records, an aborted one, 2 more committed,
    then an open-ended tail of plain records. Offsets: a commit marker after each
    transaction, so committed record k is not at offset k. Yields (topic, committed values)."""
    topic = f"txn-{uuid.uuid4().hex[:8]}"
    create_topic(broker.bootstrap, topic, 1)
    p = Producer({"bootstrap.servers": broker.bootstrap,
                  "transactional.id": f"t-{uuid.uuid4().hex}"})
    p.init_transactions(30)
    committed: list[bytes] = []
    for t in range(6):
        p.begin_transaction()
        values = [f"t{t}-{i}".encode() for i in range(5)]
        for v in values:
            p.produce(topic, value=v, partition=0)
        if t == 3:
            p.flush(30)
            p.abort_transaction(30)
        else:
            p.commit_transaction(30)
            committed += values
    yield topic, committed


def _read(reader: RangeReader) -> list[bytes]:
    out: list[bytes] = []
    for partition, messages in reader:
        assert partition == 0
        out += [m.value() for m in messages]
    return out


def _reader_config(bootstrap: str) -> dict[str, Any]:
    """What `processor batch` gives the reader: the worker's group-less consumer settings."""
    return range_consumer_config(load_config(None, bootstrap_servers=bootstrap,
                                             processing_guarantee="at_least_once"))


def test_range_reader_reads_exactly_the_range_over_transactions(broker, transactional):
    topic, committed = transactional
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    config = _reader_config(broker.bootstrap)
    # to the end: the last offsets are a commit marker, never delivered as a message
    whole = resolve_ranges(admin, "txn", topic, BoundedSpec())
    assert whole == {0: PartitionRange(0, 5 * 6 + 6)}  # 30 records + 6 markers
    assert _read(RangeReader(topic, whole, config)) == committed
    # offsets 6..24: from the 1st record of transaction 1 (after its marker at 5) up to the
    # aborted transaction's records (18..22) and its marker (23): they are skipped
    middle = resolve_ranges(admin, "txn", topic,
                            BoundedSpec(start=Bound(offsets={0: 6}), end=Bound(offsets={0: 24})))
    assert _read(RangeReader(topic, middle, config)) == committed[5:15]
    # an end inside a transaction: offsets 12..14 are the first 3 records of transaction 2
    inside = resolve_ranges(admin, "txn", topic,
                            BoundedSpec(start=Bound(offsets={0: 12}), end=Bound(offsets={0: 15})))
    assert _read(RangeReader(topic, inside, config)) == committed[10:13]
    empty = resolve_ranges(admin, "txn", topic, BoundedSpec(start=Bound(offsets={0: 9}),
                                                             end=Bound(offsets={0: 3})))
    assert empty == {0: PartitionRange(9, 9)} and _read(RangeReader(topic, empty, config)) == []


def test_ranges_resolved_by_the_broker(broker, orders):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    ranges = resolve_ranges(admin, "orders", orders, BoundedSpec(
        start=Bound(timestamp=T0 + 3_000), end=Bound(timestamp=T0 + 10 * N + 60_000)))
    per = N // PARTITIONS
    # record 300 (3 s) starts partition 0 at 75; no record after the end: the partition's end
    assert ranges == {p: PartitionRange(75, per) for p in range(PARTITIONS)}
    with pytest.raises(ProcessorError, match=r"bounded.start.offsets names partition 7, but its "
                                             r"topic has 4 \(0-3\)"):
        resolve_ranges(admin, "orders", orders, BoundedSpec(start=Bound(offsets={7: 0})))
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    with pytest.raises(ProcessorError, match=f"topic '{missing}' does not exist"):
        resolve_ranges(admin, "orders", missing, BoundedSpec())
    assert missing not in admin.list_topics(timeout=10).topics, "asking must not create it"
