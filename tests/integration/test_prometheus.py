"""A real Prometheus server scrapes a running worker under steady load; its query API must show
the throughput, lag, checkpoint and transaction series with sane values."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from processor.examples.revenue import sample_orders
from processor.tools.broker import free_port
from processor.tools.generator import create_topic, produce_json
from tests.integration.kafka import WorkerProcess, topology_file
from tests.integration.prometheus import INSTALL_HINT, PrometheusServer, find_prometheus

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(find_prometheus() is None, reason=INSTALL_HINT)]

RATE = 2_000  # records/s produced to the source topic
SECONDS = 20  # upper bound of the production; the test stops it once it has its answers
PARTITIONS = 4


class SteadyProducer(threading.Thread):
    """Produces sample orders at RATE/s in the background until stopped or SECONDS elapse."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic = bootstrap, topic
        self.stopping = threading.Event()
        self.sent = 0  # records handed to the producer so far (an upper bound of what arrived)
        self.error: BaseException | None = None
        self.started_at = 0.0

    def _orders(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for key, order in sample_orders(RATE * SECONDS, users=300):
            if self.stopping.is_set():
                return
            self.sent += 1
            yield key, order

    def run(self) -> None:
        self.started_at = time.monotonic()
        try:
            produce_json(self.bootstrap, self.topic, self._orders(), rate_per_s=RATE)
        except BaseException as exc:  # reported by the test thread
            self.error = exc

    def stop(self) -> None:
        self.stopping.set()
        if self.ident is None:  # never started
            return
        self.join(60)
        assert not self.is_alive(), "producer thread did not stop"
        if self.error is not None:
            raise self.error


def test_prometheus_scrapes_lag_throughput_and_checkpoints(broker, tmp_path, unique):
    name, source, output = f"rev-{unique}", f"orders-{unique}", f"revenue-{unique}"
    topology = topology_file(tmp_path, "revenue_per_user.yaml", name, {
        "name: revenue-per-user": f"name: {name}",
        "topic: orders": f"topic: {source}",
        "topic: revenue-per-user": f"topic: {output}",
    })
    create_topic(broker.bootstrap, source, PARTITIONS)
    metrics_port = free_port()
    job = f"processor-{unique}"

    worker = WorkerProcess(topology, broker.bootstrap, tmp_path / "state", tmp_path, idle=None,
                           env={"PROCESSOR_METRICS_PORT": str(metrics_port)})
    prom = PrometheusServer(tmp_path / "prometheus", job, f"127.0.0.1:{metrics_port}")
    producer = SteadyProducer(broker.bootstrap, source)
    try:
        prom.start()
        worker.wait_for_log("task running", timeout=60, count=PARTITIONS)
        producer.start()

        def context() -> str:
            return (f"\ntargets: {[(t['health'], t['lastError']) for t in prom.targets()]}"
                    f"\nprometheus log:\n{prom.log_text()}\nworker log:\n{worker.log_text()}")

        # Enough healthy scrapes for 10s rate windows that lie inside the steady production.
        deadline = time.monotonic() + 40
        while True:
            scrapes = prom.value(f'count_over_time(up{{job="{job}"}}[12s])') or 0
            healthy = prom.value(f'min_over_time(up{{job="{job}"}}[12s])') or 0
            if (scrapes >= 10 and healthy == 1
                    and time.monotonic() - producer.started_at >= 12):
                break
            assert time.monotonic() < deadline, f"{scrapes} scrapes, up={healthy}" + context()
            assert producer.is_alive(), f"producer ended early: {producer.error}" + context()
            time.sleep(0.5)

        # -- the target is up
        assert prom.value(f'up{{job="{job}"}}') == 1, context()
        sel = f'job="{job}"'

        # -- throughput: the source topic is consumed at about the produce rate (the worker
        # started before the load, so there is no backlog to catch up); the sum over topics also
        # counts the internal repartition topic (filtered orders only), so at most twice that.
        source_rate = prom.value(
            f'sum(rate(processor_records_consumed_total{{{sel},topic="{source}"}}[10s]))')
        total_rate = prom.value(f'sum(rate(processor_records_consumed_total{{{sel}}}[10s]))')
        assert source_rate is not None and total_rate is not None, context()
        assert 0.4 * RATE <= source_rate <= 1.6 * RATE, (source_rate, context())
        assert 0 < total_rate <= 2 * 1.6 * RATE, (total_rate, context())
        assert total_rate >= source_rate

        # -- lag: one series per source partition, within [0, records produced so far)
        lag = prom.query(f'processor_consumer_lag_records{{{sel},topic="{source}"}}')
        sent = producer.sent
        by_partition = {s["metric"].get("partition"): s["value"] for s in lag}
        assert set(by_partition) == {str(p) for p in range(PARTITIONS)}, (lag, context())
        assert all(0 <= v < sent for v in by_partition.values()), (by_partition, sent)

        # -- checkpoints: successful ones (result="ok") keep coming, and they are quick
        checkpoints = prom.value(
            f'sum(increase(processor_checkpoints_total{{{sel},result="ok"}}[10s]))')
        assert checkpoints is not None and checkpoints > 0, (checkpoints, context())
        p99 = prom.value(
            "histogram_quantile(0.99, sum by (le) "
            f"(rate(processor_checkpoint_duration_seconds_bucket{{{sel}}}[10s])))")
        assert p99 is not None and 0 < p99 < 5, (p99, context())

        # -- exactly_once (the default guarantee): transactions are committed
        transactions = prom.value(
            f'sum(processor_transactions_total{{{sel},result="committed"}})')
        assert transactions is not None and transactions > 0, (transactions, context())

        # -- the memory budget (512 MiB by default): each part in use and within its share
        budget = prom.value(f'processor_state_memory_budget_bytes{{{sel}}}')
        assert budget == 512 * 1024**2, (budget, context())
        parts = {s["metric"]["part"]: s["value"]
                 for s in prom.query(f'processor_state_memory_bytes{{{sel}}}')}
        assert set(parts) == {"block_cache", "memtables", "write_caches"}, (parts, context())
        assert 0 < parts["memtables"] <= budget / 4, parts  # the store's writes
        assert 0 < parts["write_caches"] <= budget / 2, parts  # the aggregate's cached keys
        assert 0 <= parts["block_cache"] <= budget / 4, parts
        trims = prom.value(f'processor_state_cache_trims_total{{{sel}}}')
        assert trims == 0, (trims, "the few keys of this run fit the write caches' share")

        # -- the aggregate's results reach the output topic
        produced = prom.value(f'sum(processor_records_produced_total{{{sel},topic="{output}"}})')
        assert produced is not None and produced > 0, (produced, context())
    finally:  # each step runs whatever the previous one raised
        try:
            producer.stop()
        finally:
            try:
                assert worker.terminate(timeout=60) == 0, worker.log_text()
            finally:
                prom.stop()
