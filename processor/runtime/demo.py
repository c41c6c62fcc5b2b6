"""`processor demo`: embedded broker + generator + a topology in a worker subprocess, printing
live results as they arrive on the output topics.

`--example revenue` (default) runs revenue_per_user.yaml and prints per-user totals;
`reconciliation` and `fraud` run the examples whose views live in processor/examples/demos.py.
The harness is the same for all: create the topics, let the view prepare its inputs, start one
exactly-once worker, feed input in a thread, read the outputs read_committed and let the view
print every 2 s.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from processor.runtime.broker import EmbeddedBroker
from processor.runtime.generator import create_topic, produce_json
from processor.samples import sample_orders

TOPOLOGIES = Path(__file__).resolve().parents[2] / "topologies"
TOPOLOGY = TOPOLOGIES / "revenue_per_user.yaml"
EXAMPLES = ("revenue", "reconciliation", "fraud")
DEFAULT_RATES = {"revenue": 2000, "reconciliation": 500, "fraud": 200}


class RevenueView:
    """Random orders stamped with the current time; the top users by revenue."""

    topology = TOPOLOGY
    topics = {"orders": 4, "revenue-per-user": 4}
    outputs = ("revenue-per-user",)

    def __init__(self, seconds: float, rate: float) -> None:
        self.seconds, self.rate = seconds, rate
        self.totals: dict[str, dict] = {}
        self.received = 0

    def banner(self) -> str:
        return f"generator: {int(self.seconds * self.rate)} orders at {self.rate:.0f}/s"

    def prepare(self, bootstrap: str) -> None:
        pass

    def feed(self, bootstrap: str) -> None:
        produce_json(bootstrap, "orders", sample_orders(int(self.seconds * self.rate)),
                     rate_per_s=self.rate, stamp_now=True)

    def on_output(self, topic: str, key: bytes | None, value: Any) -> None:
        self.totals[key.decode() if key else ""] = value
        self.received += 1

    def tick(self, bootstrap: str, elapsed: float) -> None:
        if not self.totals:
            return
        top = sorted(self.totals.values(), key=lambda r: -r["revenue"])[:8]
        print(f"\n[{elapsed:5.1f}s] {self.received} updates on topic revenue-per-user, "
              f"{len(self.totals)} users; top by revenue:")
        print(f"  {'user':<6} {'orders':>6} {'revenue':>11} {'avg':>8} {'largest':>8}  country")
        for r in top:
            print(f"  {r['user']:<6} {r['orders']:>6} {r['revenue']:>11.2f} {r['avg_order']:>8.2f} "
                  f"{r['largest']:>8.2f}  {r['country']}")
        sys.stdout.flush()


def make_view(example: str, seconds: float, rate: float) -> Any:
    if example == "revenue":
        return RevenueView(seconds, rate)
    from processor.examples import demos

    if example == "reconciliation":
        return demos.ReconciliationView(seconds, rate)
    if example == "fraud":
        from processor.examples.fraud_model import ENV_VAR

        env = os.environ.get(ENV_VAR)
        model = Path(env) if env else TOPOLOGIES / "models" / "fraud_model.joblib"
        return demos.FraudView(seconds, rate, model)
    raise ValueError(f"unknown example {example!r} (known: {', '.join(EXAMPLES)})")


def run_demo(seconds: float = 20, rate: float | None = None, example: str = "revenue") -> int:
    view = make_view(example, seconds, rate or DEFAULT_RATES[example])
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    broker = None if external else EmbeddedBroker().start()
    bootstrap = external or broker.bootstrap  # type: ignore[union-attr]
    print(f"broker: {bootstrap} ({'external' if external else 'embedded Tansu, in-memory'})")
    worker = None
    state_dir = tempfile.mkdtemp(prefix="processor-demo-")
    try:
        for topic, partitions in view.topics.items():
            create_topic(bootstrap, topic, partitions)
        view.prepare(bootstrap)
        worker = subprocess.Popen(
            [sys.executable, "-m", "processor", "run", str(view.topology), "--bootstrap-servers",
             bootstrap, "--state-dir", state_dir, "--log-format", "text", "--commit-interval",
             "500ms"],
            env={"PROCESSOR_MAX_POLL_INTERVAL_MS": "6000",
                 # Tansu has no KIP-848 groups; a cluster of the user's may (Kafka >= 4.0)
                 **({} if external else {"PROCESSOR_GROUP_PROTOCOL": "classic"}),
                 **os.environ, "PROCESSOR_SESSION_TIMEOUT_MS": "6000",
                 "PROCESSOR_LOG_LEVEL": "WARNING", **getattr(view, "worker_env", {})})
        print(f"worker: pid {worker.pid}, topology {view.topology.name}, exactly-once; "
              f"{view.banner()}")
        return _watch(view, worker, bootstrap, seconds)
    except KeyboardInterrupt:
        return 130
    finally:
        if worker is not None:
            worker.terminate()
            code = worker.wait(60)
            print(f"\nworker stopped (exit {code}); state was in {state_dir}")
        if broker:
            broker.stop()


def _watch(view: Any, worker: subprocess.Popen, bootstrap: str, seconds: float) -> int:
    threading.Thread(target=view.feed, args=(bootstrap,), daemon=True).start()
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "demo-viewer",
                         "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
    consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING)
                     for t in view.outputs for p in range(view.topics[t])])
    started, last_print = time.monotonic(), 0.0
    try:
        while time.monotonic() - started < seconds + 8:
            for m in consumer.consume(1000, 0.5):
                if m.error() is None and m.value() is not None:
                    view.on_output(m.topic(), m.key(), orjson.loads(m.value()))
            now = time.monotonic() - started
            if now - last_print >= 2:
                view.tick(bootstrap, now)
                last_print = now
            if worker.poll() is not None:
                print(f"worker exited early with code {worker.returncode}")
                return 1
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return 0 if view.received else 1
