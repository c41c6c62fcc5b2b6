"""The brokers the project starts itself: the reference broker isolates aborted transactions,
keeps committed data across a kill -9, and `processor dev-broker` starts and stops cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
from confluent_kafka import Producer

from processor.tools.broker import free_port, port_in_use
from processor.tools.generator import create_topic
from tests.integration.kafka import ROOT, read_all

pytestmark = pytest.mark.integration


def _transactions(bootstrap: str, topic: str, plan: list[tuple[str, int]]) -> None:
    """Run transactions in order: (`commit` | `abort`, number of records)."""
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"t-{uuid.uuid4().hex}"})
    p.init_transactions(30)
    for i, (outcome, n) in enumerate(plan):
        p.begin_transaction()
        for j in range(n):
            p.produce(topic, f"{outcome}-{i}-{j}".encode(), partition=j % 2)
        p.flush(30)
        (p.commit_transaction if outcome == "commit" else p.abort_transaction)(30)


def test_read_committed_never_sees_a_record_of_an_aborted_transaction(broker):
    if broker.kind != "apache-kafka":
        pytest.skip(f"a property of the reference broker; {broker.kind} is probed at start")
    topic = f"isolation-{uuid.uuid4().hex[:8]}"
    create_topic(broker.bootstrap, topic, 2)
    plan = [("commit", 50), ("abort", 70), ("commit", 30), ("abort", 10), ("commit", 20)]
    _transactions(broker.bootstrap, topic, plan)
    committed = [v.decode() for _, v, _ in read_all(broker.bootstrap, topic, committed=True)]
    everything = read_all(broker.bootstrap, topic, committed=False)
    assert not [v for v in committed if v.startswith("abort")], "an aborted record was visible"
    assert len(committed) == 100, f"{len(committed)} committed records read, 100 written"
    assert len(everything) == 180, "read_uncommitted should show the aborted records too"


def test_committed_records_survive_a_broker_kill_and_restart(tmp_path):
    from processor.tools.apache_kafka import ApacheKafkaBroker

    with ApacheKafkaBroker(data_dir=tmp_path / "kafka", install=True) as kafka:
        topic = "durable"
        create_topic(kafka.bootstrap, topic, 2)
        _transactions(kafka.bootstrap, topic, [("commit", 40), ("abort", 5)])
        port = kafka.port
        kafka.kill()
        assert not port_in_use(port)
        kafka.start()
        assert kafka.port == port, "a restart keeps the broker's address"
        values = [v.decode() for _, v, _ in read_all(kafka.bootstrap, topic, committed=True)]
        assert sorted(values) == sorted(f"commit-0-{j}" for j in range(40))


def _dev_broker(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "processor", "dev-broker", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.mark.parametrize("kind", ["tansu", "apache"])
def test_dev_broker_stops_its_broker_on_sigterm_and_refuses_a_busy_port(kind, tmp_path):
    port = free_port()
    extra = ["--data-dir", str(tmp_path / "kafka")] if kind == "apache" else []
    first = _dev_broker("--kafka", kind, "--port", str(port), *extra)
    try:
        assert first.stdout is not None
        banner = first.stdout.readline()
        assert f"listening on 127.0.0.1:{port}" in banner, first.stderr.read() if first.stderr else ""
        create_topic(f"127.0.0.1:{port}", "ping", 1)

        second = _dev_broker("--kafka", kind, "--port", str(port))
        out, err = second.communicate(timeout=60)
        assert second.returncode == 2, (out, err)
        assert f"port {port} on 127.0.0.1 is already in use" in err
        assert "Traceback" not in err

        first.send_signal(signal.SIGTERM)
        assert first.wait(60) == 0
    finally:
        if first.poll() is None:
            first.kill()
    deadline = time.monotonic() + 10
    while port_in_use(port) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not port_in_use(port), "dev-broker exited but its broker still listens"


def test_a_worker_on_a_broker_without_kip848_groups_says_what_to_change(tmp_path):
    """Tansu never answers a KIP-848 heartbeat: the worker must say so instead of waiting
    silently (the default group_protocol is `consumer`)."""
    from processor.tools.broker import EmbeddedBroker
    from tests.integration.kafka import WorkerProcess, topology_file

    with EmbeddedBroker(log_file=tmp_path / "tansu.log") as tansu:
        create_topic(tansu.bootstrap, "orders", 2)
        topology = topology_file(tmp_path, "revenue_per_user.yaml", "no-kip848", {})
        worker = WorkerProcess(topology, tansu.bootstrap, tmp_path / "state", tmp_path,
                               idle=None, env={"PROCESSOR_GROUP_PROTOCOL": "consumer"})
        try:
            worker.wait_for_log("waiting for an assignment", timeout=40)
        finally:
            worker.kill()
    warning = next(r for r in worker.logs() if r.get("msg") == "waiting for an assignment")
    assert warning["level"] == "warning" and warning["group_protocol"] == "consumer"
    assert "group_protocol: classic" in warning["hint"]
