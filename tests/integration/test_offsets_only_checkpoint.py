"""A checkpoint that wrote nothing still commits what it consumed: a filter that drops every
record of an interval leaves a transaction holding only the consumed offsets (exactly_once) or
a bare offset commit (at_least_once), and a restarted worker must not read those records again.

Tansu drops the offsets of such a transaction (README, "Brokers": measured with this test, the
committed offset stayed at 10 of 25); the reference broker must not.
"""

from __future__ import annotations

import time
import uuid

import orjson
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from processor.tools.consumer_group import committed_offsets
from processor.tools.generator import create_topic
from tests.integration.kafka import WorkerProcess, read_all, topology_file

pytestmark = pytest.mark.integration


def _produce(bootstrap: str, topic: str, n: int, *, test: bool) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for i in range(n):
        p.produce(topic, orjson.dumps({"user": f"u{i}", "amount": 1.0, "country": "de",
                                       "test": test}), f"o{i}".encode())
    assert p.flush(30) == 0


def _wait_committed(bootstrap: str, group: str, topic: str, want: int, timeout: float) -> int:
    """The group's committed offset of the topic's partition 0 once it is `want`, or at the
    deadline (-1: none committed)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout
    while True:
        got = committed_offsets(admin, group).get((topic, 0), -1)
        if got == want or time.monotonic() >= deadline:
            return got
        time.sleep(0.5)


@pytest.mark.parametrize("guarantee", ["exactly_once", "at_least_once"])
def test_an_interval_that_outputs_nothing_still_commits_its_offsets(broker, tmp_path, guarantee):
    if broker.kind == "embedded-tansu" and guarantee == "exactly_once":
        pytest.skip("Tansu drops the offsets of a transaction holding no records (README, Brokers)")
    u = uuid.uuid4().hex[:8]
    orders, output, group = f"orders-{u}", f"clean-{u}", f"clean-orders-{u}"
    create_topic(broker.bootstrap, orders, 1)
    topology = topology_file(tmp_path, "clean_orders.yaml", group, {
        "name: clean-orders": f"name: {group}", "topic: orders-clean": f"topic: {output}",
        "topic: orders\n": f"topic: {orders}\n"})
    _produce(broker.bootstrap, orders, 10, test=False)
    w = WorkerProcess(topology, broker.bootstrap, tmp_path / "state", tmp_path,
                      guarantee=guarantee, idle=None)
    assert _wait_committed(broker.bootstrap, group, orders, 10, 60) == 10, w.log_text()
    _produce(broker.bootstrap, orders, 15, test=True)  # every one filtered out
    assert _wait_committed(broker.bootstrap, group, orders, 25, 30) == 25, w.log_text()
    assert w.terminate() == 0, w.log_text()
    assert len(read_all(broker.bootstrap, output)) == 10
    # a restarted worker has nothing left to read
    again = WorkerProcess(topology, broker.bootstrap, tmp_path / "state", tmp_path,
                          guarantee=guarantee)
    assert again.wait(90) == 0, again.log_text()
    assert again.find("worker stopped")[-1]["records"] == 0, again.log_text()
    assert len(read_all(broker.bootstrap, output)) == 10
