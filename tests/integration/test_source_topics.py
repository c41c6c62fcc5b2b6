"""A missing source topic on a real broker: with `create_source_topics` on, the worker creates
one whose source declares `partitions:` with that count and processes what is produced to it; an
undeclared one is still waited for, and the worker exits 2 naming both ways to make it; an
existing one with another count than declared is used as it is, with a warning."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import orjson
from confluent_kafka.admin import AdminClient

from processor.tools.generator import create_topic, produce_json
from tests.integration.kafka import ROOT, WorkerProcess, read_all, topology_file


def _clean_orders(tmp: Path, name: str, source: str, sink: str, partitions: int | None) -> Path:
    """topologies/clean_orders.yaml reading `source` (declaring `partitions` when given)."""
    declared = f"    partitions: {partitions}\n" if partitions else ""
    return topology_file(tmp, "clean_orders.yaml", name, {
        "name: clean-orders": f"name: {name}",
        "    topic: orders\n": f"    topic: {source}\n{declared}",
        "topic: orders-clean": f"topic: {sink}"})


def _partitions(bootstrap: str, topic: str) -> int | None:
    meta = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics.get(topic)
    return None if meta is None or meta.error is not None else len(meta.partitions)


def test_a_declared_source_topic_is_created_and_its_records_processed(broker, tmp_path: Path,
                                                                       unique: str) -> None:
    source, sink, name = f"new-orders-{unique}", f"new-clean-{unique}", f"create-src-{unique}"
    path = _clean_orders(tmp_path, name, source, sink, partitions=3)
    assert _partitions(broker.bootstrap, source) is None
    worker = WorkerProcess(path, broker.bootstrap, tmp_path / "state", tmp_path, idle=None,
                           env={"PROCESSOR_CREATE_SOURCE_TOPICS": "true"})
    worker.wait_for_log("created source topic", timeout=90)
    (created,) = worker.find("created source topic")
    assert (created["topic"], created["partitions"]) == (source, 3)
    assert _partitions(broker.bootstrap, source) == 3
    assert not worker.find(f"waiting for source topic(s) {source}: create them with")

    orders = [(f"o{i}", {"user": f"u{i % 5}", "amount": i, "country": "de", "test": i % 10 == 0})
              for i in range(40)]
    produce_json(broker.bootstrap, source, orders)
    deadline = time.monotonic() + 90
    while True:
        out = read_all(broker.bootstrap, sink)
        if len(out) >= 36 or time.monotonic() > deadline or worker.poll() is not None:
            break
        time.sleep(1)
    assert worker.poll() is None, worker.log_text()[-3000:]
    worker.terminate()
    got = sorted((orjson.loads(v)["order"], orjson.loads(v)["amount"], orjson.loads(v)["country"])
                 for _, v, _ in out)
    assert got == sorted((f"o{i}", i, "DE") for i in range(40) if i % 10)
    assert len({p for _, _, p in out}) > 1  # the keys spread over the created partitions
    assert len(worker.find("created source topic")) == 1


def test_an_undeclared_source_topic_is_still_waited_for_with_the_setting_on(
        broker, tmp_path: Path, unique: str, monkeypatch) -> None:
    monkeypatch.setenv("PROCESSOR_SOURCE_TOPIC_WAIT_MS", "3000")  # the default waits 30 s
    missing, name = f"undeclared-{unique}", f"undeclared-{unique}"
    path = _clean_orders(tmp_path, name, missing, f"undeclared-out-{unique}", partitions=None)
    run = subprocess.run([sys.executable, "-m", "processor", "run", str(path),
                          "--create-source-topics", "--bootstrap-servers", broker.bootstrap,
                          "--state-dir", str(tmp_path / "state"), "--log-format", "text"],
                         cwd=ROOT, text=True, capture_output=True, timeout=120)
    command = f"processor topics create {missing} --partitions 1 --bootstrap-servers " \
              f"{broker.bootstrap}"
    other = (f"or declare `partitions:` on the source of {missing} for the worker to create "
             "them (create_source_topics is on)")
    assert run.returncode == 2, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    assert f"waiting for source topic(s) {missing}: create them with {command}, {other}" \
        in run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last == (f"error: source topic(s) {missing} do not exist: create them (choose the "
                    f"partition count: the tasks' parallelism), {other}. The command: {command}")
    assert "created source topic" not in run.stderr
    assert _partitions(broker.bootstrap, missing) is None


def test_an_existing_source_topic_keeps_its_count_when_another_is_declared(
        broker, tmp_path: Path, unique: str) -> None:
    source, sink, name = f"old-orders-{unique}", f"old-clean-{unique}", f"keep-src-{unique}"
    create_topic(broker.bootstrap, source, 2)
    path = _clean_orders(tmp_path, name, source, sink, partitions=3)
    produce_json(broker.bootstrap, source, [(f"o{i}", {"user": "u", "amount": i, "country": "fr"})
                                            for i in range(10)])
    worker = WorkerProcess(path, broker.bootstrap, tmp_path / "state", tmp_path, idle="3s",
                           env={"PROCESSOR_CREATE_SOURCE_TOPICS": "true"})
    assert worker.wait(timeout=120) == 0, worker.log_text()[-3000:]
    (warning,) = worker.find(f"source topic {source} has 2 partitions, the topology declares 3: "
                             "the worker uses the broker's count (correct `partitions:` on the "
                             "source)")
    assert (warning["level"], warning["partitions"], warning["declared"]) == ("warning", 2, 3)
    assert not worker.find("created source topic")
    assert _partitions(broker.bootstrap, source) == 2
    assert sorted(orjson.loads(v)["amount"] for _, v, _ in read_all(broker.bootstrap, sink)) == \
        list(range(10))
