"""`processor batch` on the real broker: one topology, the same results over history and live.

- The GMV dashboard (filter, key_by -> repartition, 1 s tumbling windows, a late-records
  topic) over orders with disorder and records later than the allowed lateness: a streaming
  worker over the topic, bounded at its end (`--end orders=latest`: every window closes), a
  batch run over the same topic (a range, no group) and a batch run over the same records in a
  JSON-lines file give the same windows and the same late records, each once. One partition:
  which record is late then depends on the input order alone, in every run.
- The fraud example (a per-task table, a broadcast of rules, a scikit-learn model, two sinks)
  over 4 partitions: batch over a file of the transactions (tables read from their topics)
  equals the streaming run, record for record and sink for sink.
- Topic outputs of a batch run are one transaction: killed -9 after its files were renamed and
  before the transaction committed, nothing is visible to a read_committed consumer; the
  rerun writes every output once, and the file is whole both times.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from processor.examples import fraud
from processor.examples.fraud_model import ENV_VAR, train_fraud_model
from processor.tools import worker_process
from processor.tools.generator import create_topic, produce_json
from tests.integration.kafka import WorkerProcess, read_all, topology_file

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000


def _orders(n: int, seed: int = 3, *, late: bool = True) -> list[dict[str, Any]]:
    """Orders ~4 ms apart; one in 12 up to 1.5 s early (within the watermark bound, 2 s) and,
    with `late`, one in 40 up to 6 s early (later than the bound + the 1 s lateness)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        ts = T0 + 4 * i
        roll = rng.random()
        if late and roll < 1 / 40:
            ts -= rng.randint(3_500, 6_000)
        elif roll < 1 / 12:
            ts -= rng.randint(0, 1_500)
        out.append({"order_id": f"o{i}", "country": rng.choice(["de", "fr", "it", "es"]),
                    "status": rng.choice(["paid", "paid", "paid", "cancelled"]),
                    "amount": rng.randint(1, 300), "ts": ts})
    return out


def _batch(topology: Path, bootstrap: str, *args: str, env: dict[str, str] | None = None
           ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "processor", "batch", str(topology), "--bootstrap-servers",
         bootstrap, "--log-format", "json", *args],
        capture_output=True, text=True, timeout=180, env={**os.environ, **(env or {})})


def _bounded_worker(topology: Path, bootstrap: str, tmp: Path, *sources: str,
                    env: dict[str, str] | None = None) -> worker_process.WorkerProcess:
    """A streaming worker over its sources' topics up to their ends (a bounded run)."""
    cmd = worker_process.worker_command(topology, bootstrap, tmp / "state-live",
                                        guarantee="exactly_once", commit_interval="100ms")
    for source in sources:
        cmd += ["--end", f"{source}=latest"]
    w = worker_process.WorkerProcess(cmd, tmp / f"worker-{uuid.uuid4().hex[:6]}.log", {
        **os.environ, "PROCESSOR_MAX_POLL_INTERVAL_MS": "6000",
        "PROCESSOR_SESSION_TIMEOUT_MS": "6000", **(env or {})})
    WorkerProcess.started.append(w)  # type: ignore[arg-type]  # reaped after the test
    return w


def _lines(path: Path) -> Counter[bytes]:
    return Counter(orjson.dumps(orjson.loads(line), option=orjson.OPT_SORT_KEYS)
                   for line in path.read_bytes().splitlines())


def _topic(bootstrap: str, topic: str) -> Counter[bytes]:
    return Counter(orjson.dumps(orjson.loads(v), option=orjson.OPT_SORT_KEYS)
                   for _, v, _ in read_all(bootstrap, topic))


KEY_BY = """      - key_by: "value['country']"        # repartition: all orders of a country meet in one task
"""


@pytest.mark.parametrize("shape", ["repartition", "windows on the source"])
def test_batch_over_a_file_and_over_the_topic_equal_the_streaming_run(broker, tmp_path, unique,
                                                                      shape):
    """Behind a repartition a record's lateness depends on where the input was cut into
    batches (the watermark follows in-band after each batch), so that shape's input stays
    within the watermark bound. On the source a record's watermark is the one before it in
    the input whatever the batches (the records are keyed by country): there, late records."""
    repartition = shape == "repartition"
    orders = _orders(3_000, late=not repartition)
    topics = {"orders": f"orders-{unique}", "gmv": f"gmv-{unique}", "late": f"late-{unique}"}
    topology = topology_file(tmp_path, "gmv_dashboard.yaml", f"gmv-{unique}", {
        "name: gmv-dashboard": f"name: gmv-{unique}",
        "topic: orders": f"topic: {topics['orders']}",
        "topic: gmv-per-second": f"topic: {topics['gmv']}",
        "topic: gmv-late-orders": f"topic: {topics['late']}",
        **({} if repartition else {KEY_BY: ""})})
    assert ("key_by" in topology.read_text()) == repartition
    key = "order_id" if repartition else "country"
    create_topic(broker.bootstrap, topics["orders"], 1)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5,
                         "enable.idempotence": True})
    for o in orders:
        producer.produce(topics["orders"], orjson.dumps(o), o[key], timestamp=o["ts"])
    assert producer.flush(30) == 0
    history = tmp_path / "orders.jsonl"
    history.write_bytes(b"".join(orjson.dumps(o) + b"\n" for o in orders))

    streaming = _bounded_worker(topology, broker.bootstrap, tmp_path, "orders")
    assert streaming.wait(120) == 0, streaming.log_text()
    want_gmv, want_late = _topic(broker.bootstrap, topics["gmv"]), _topic(
        broker.bootstrap, topics["late"])
    assert (sum(want_late.values()) >= 20) != repartition, "late records on the source only"
    assert sum(want_gmv.values()) >= 30 and max(want_gmv.values()) == 1

    over_topic = _batch(topology, broker.bootstrap,
                        "--output", f"gmv={tmp_path / 'topic-gmv.jsonl'}",
                        "--output", f"{topics['late']}={tmp_path / 'topic-late.jsonl'}")
    assert over_topic.returncode == 0, over_topic.stderr[-3000:]
    over_file = _batch(topology, broker.bootstrap, "--input", f"orders={history}",
                       "--key", f"orders={key}",
                       "--output", f"gmv={tmp_path / 'file-gmv.jsonl'}",
                       "--output", f"{topics['late']}={tmp_path / 'file-late.jsonl'}")
    assert over_file.returncode == 0, over_file.stderr[-3000:]
    assert "read 3000 from" in over_file.stdout, over_file.stdout
    for run in ("topic", "file"):
        assert _lines(tmp_path / f"{run}-gmv.jsonl") == want_gmv, run
        assert _lines(tmp_path / f"{run}-late.jsonl") == want_late, run


def _replacements(topics: dict[str, str]) -> dict[str, str]:
    return {f"topic: {t}{end}": f"topic: {u}{end}" for t, u in topics.items() for end in "\n,"}


def test_batch_of_the_fraud_example_over_a_file_equals_the_streaming_run(broker, tmp_path,
                                                                         unique):
    """Per-task table, broadcast and model: batch reads the tables from their topics."""
    topics = {"transactions": f"transactions-{unique}", "customers": f"customers-{unique}",
              "fraud-rules": f"fraud-rules-{unique}", "fraud-alerts": f"fraud-alerts-{unique}",
              "transactions-scored": f"transactions-scored-{unique}"}
    topology = topology_file(tmp_path, "fraud_detection.yaml", f"fraud-{unique}", {
        "name: fraud-detection": f"name: fraud-{unique}", **_replacements(topics)})
    model_path = tmp_path / "model" / "fraud_model.joblib"
    train_fraud_model(model_path, n_transactions=3000)
    sample = fraud.generate(500, n_customers=100, seed=9, fraud_share=0.08,
                            unknown_customer_share=0.05)  # partitioned by the producer
    rules = {"threshold": {"min_score": 0.7}, "blocked_countries": {"countries": ["kp", "ir"]},
             "max_amount": {"limit": 400}}
    create_topic(broker.bootstrap, topics["transactions"], 4)
    create_topic(broker.bootstrap, topics["customers"], 4)
    create_topic(broker.bootstrap, topics["fraud-rules"], 1)
    produce_json(broker.bootstrap, topics["customers"], sample.customers)
    produce_json(broker.bootstrap, topics["fraud-rules"], fraud.rule_records(rules))
    produce_json(broker.bootstrap, topics["transactions"], sample.transactions)
    history = tmp_path / "transactions.jsonl"
    history.write_bytes(b"".join(orjson.dumps(r[1]) + b"\n" for r in sample.transactions))

    env = {ENV_VAR: str(model_path)}
    streaming = _bounded_worker(topology, broker.bootstrap, tmp_path, "transactions", env=env)
    assert streaming.wait(120) == 0, streaming.log_text()
    want = {sink: _topic(broker.bootstrap, topics[sink])
            for sink in ("fraud-alerts", "transactions-scored")}
    assert sum(want["fraud-alerts"].values()) > 0
    assert sum(map(sum, (c.values() for c in want.values()))) == len(sample.transactions)

    run = _batch(topology, broker.bootstrap, "--input", f"transactions={history}",
                 "--key", "transactions=customer_id",
                 "--output", f"alerts={tmp_path / 'alerts.jsonl'}",
                 "--output", f"scored={tmp_path / 'scored.jsonl'}", env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert _lines(tmp_path / "alerts.jsonl") == want["fraud-alerts"]
    assert _lines(tmp_path / "scored.jsonl") == want["transactions-scored"]


def test_topic_outputs_of_a_killed_batch_run_are_invisible_and_a_rerun_writes_them_once(
        broker, tmp_path, unique):
    orders = _orders(2_000, seed=8)
    topics = {"gmv": f"gmv-{unique}", "late": f"late-{unique}"}
    topology = topology_file(tmp_path, "gmv_dashboard.yaml", f"gmv-{unique}", {
        "name: gmv-dashboard": f"name: gmv-{unique}",
        "topic: gmv-per-second": f"topic: {topics['gmv']}",
        "topic: gmv-late-orders": f"topic: {topics['late']}", KEY_BY: ""})
    history = tmp_path / "orders.jsonl"
    history.write_bytes(b"".join(orjson.dumps(o) + b"\n" for o in orders))
    args = ("--input", f"orders={history}", "--key", "orders=country",
            "--output", f"{topics['late']}={tmp_path / 'late.jsonl'}")

    killed = _batch(topology, broker.bootstrap, *args,
                    env={"PROCESSOR_CRASH_AT": "batch_run.files_committed:1"})
    assert killed.returncode == -9, (killed.returncode, killed.stderr[-2000:])
    assert (tmp_path / "late.jsonl").exists()  # the file was renamed before the kill
    first_late = _lines(tmp_path / "late.jsonl")
    assert _topic(broker.bootstrap, topics["gmv"]) == Counter()  # the transaction never committed

    rerun = _batch(topology, broker.bootstrap, *args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    got = _topic(broker.bootstrap, topics["gmv"])
    assert sum(got.values()) >= 30 and max(got.values()) == 1, "every window once"
    assert _lines(tmp_path / "late.jsonl") == first_late and sum(first_late.values()) > 0
    assert not list(tmp_path.glob(".late.jsonl.*.tmp"))
