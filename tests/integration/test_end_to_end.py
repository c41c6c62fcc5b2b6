"""The example topologies end to end on a real broker, checked against oracles."""

from __future__ import annotations

import time

import pytest

from processor.examples.revenue import sample_orders
from processor.tools.broker import free_port
from processor.tools.generator import create_topic, produce_json
from tests.integration.kafka import (
    WorkerProcess,
    metric_sum,
    metrics_text,
    read_all,
    topology_file,
)
from tests.integration.scenario import RevenueScenario

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("guarantee", ["exactly_once", "at_least_once"])
def test_revenue_per_user_equals_oracle(broker, tmp_path, unique, guarantee):
    sc = RevenueScenario(broker.bootstrap, tmp_path, unique, guarantee)
    sc.produce(20_000)
    w = sc.worker()
    assert w.wait() == 0, w.log_text()
    sc.assert_final_state_matches_oracle()
    # the changelog exists and holds a position record per checkpoint plus the state writes
    changelog = read_all(broker.bootstrap, f"{sc.name}-totals-changelog")
    assert any(k == b"\x00__processor_position__" for k, _, _ in changelog)
    assert {k for k, _, _ in changelog if not k.startswith(b"\x00")} == {
        f'"{u}"'.encode() for u in {o["user"] for _, o in sc.produced
                                   if o["amount"] > 0 and o["status"] != "cancelled"}}
    # a restart with the same state directory restores nothing stale and changes nothing
    def per_partition():  # stable sort keeps each partition's order
        return sorted(sc.outputs(), key=lambda r: r[2])

    before = per_partition()
    again = sc.worker()
    assert again.wait() == 0, again.log_text()
    assert per_partition() == before
    # the local stores' checkpoints were current: restore replayed no changelog record
    restored = [r for r in again.logs() if r.get("msg") == "store restored"]
    assert len(restored) == 4 and all(r["records"] == 0 for r in restored), restored


def test_stateless_topology_delivers_each_record_once(broker, tmp_path, unique):
    name, src, out = f"clean-{unique}", f"orders-{unique}", f"orders-clean-{unique}"
    topo = topology_file(tmp_path, "clean_orders.yaml", name, {
        "name: clean-orders": f"name: {name}", "topic: orders-clean": f"topic: {out}",
        "topic: orders\n": f"topic: {src}\n"})
    create_topic(broker.bootstrap, src, 4)
    orders = list(sample_orders(10_000, users=50))
    for i, (_, o) in enumerate(orders):
        o["test"] = i % 10 == 0
    produce_json(broker.bootstrap, src, orders)
    w = WorkerProcess(topo, broker.bootstrap, tmp_path / "state", tmp_path)
    assert w.wait() == 0, w.log_text()
    got = [k.decode() for k, _, _ in read_all(broker.bootstrap, out)]
    want = [k for i, (k, _) in enumerate(orders) if i % 10 != 0]
    assert sorted(got) == sorted(want)


def test_metrics_endpoint_reports_progress(broker, tmp_path, unique):
    sc = RevenueScenario(broker.bootstrap, tmp_path, unique)
    sc.produce(5_000)
    port = free_port()
    w = sc.worker(idle="4s", env={"PROCESSOR_METRICS_PORT": str(port)})
    w.wait_for_log("task running", count=4)
    deadline = time.monotonic() + 30
    text = ""
    while time.monotonic() < deadline:
        text = metrics_text(port)
        if (metric_sum(text, "processor_records_consumed_total") >= 5_000
                and metric_sum(text, "processor_checkpoints_total", result="ok") > 0):
            break
        time.sleep(0.3)
    else:
        raise AssertionError(f"no committed checkpoint covering the input:\n{text[:2000]}")
    assert "processor_checkpoint_duration_seconds_bucket" in text
    assert w.wait() == 0, w.log_text()
