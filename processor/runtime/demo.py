"""`processor demo`: embedded broker + order generator + the revenue topology, printing the
live per-user totals as they arrive on the output topic."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from processor.runtime.broker import EmbeddedBroker
from processor.runtime.generator import create_topic, produce_json
from processor.samples import sample_orders

TOPOLOGY = Path(__file__).resolve().parents[2] / "topologies" / "revenue_per_user.yaml"


def _print_table(totals: dict[str, dict], received: int, elapsed: float) -> None:
    top = sorted(totals.values(), key=lambda r: -r["revenue"])[:8]
    print(f"\n[{elapsed:5.1f}s] {received} updates on topic revenue-per-user, "
          f"{len(totals)} users; top by revenue:")
    print(f"  {'user':<6} {'orders':>6} {'revenue':>11} {'avg':>8} {'largest':>8}  country")
    for r in top:
        print(f"  {r['user']:<6} {r['orders']:>6} {r['revenue']:>11.2f} {r['avg_order']:>8.2f} "
              f"{r['largest']:>8.2f}  {r['country']}")
    sys.stdout.flush()


def run_demo(seconds: float = 20, rate: float = 2000) -> int:
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    broker = None if external else EmbeddedBroker().start()
    bootstrap = external or broker.bootstrap  # type: ignore[union-attr]
    print(f"broker: {bootstrap} ({'external' if external else 'embedded Tansu, in-memory'})")
    create_topic(bootstrap, "orders", 4)
    create_topic(bootstrap, "revenue-per-user", 4)
    state_dir = tempfile.mkdtemp(prefix="processor-demo-")
    worker = subprocess.Popen(
        [sys.executable, "-m", "processor", "run", str(TOPOLOGY), "--bootstrap-servers", bootstrap,
         "--state-dir", state_dir, "--log-format", "text", "--commit-interval", "500ms"],
        env={**os.environ, "PROCESSOR_MAX_POLL_INTERVAL_MS": "6000",
             "PROCESSOR_SESSION_TIMEOUT_MS": "6000", "PROCESSOR_LOG_LEVEL": "WARNING"})
    total = int(seconds * rate)
    print(f"worker: pid {worker.pid}, topology {TOPOLOGY.name}, exactly-once; "
          f"generator: {total} orders at {rate:.0f}/s")
    gen = threading.Thread(target=produce_json, args=(bootstrap, "orders", sample_orders(total)),
                           kwargs={"rate_per_s": rate, "stamp_now": True}, daemon=True)
    gen.start()
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "demo-viewer",
                         "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
    consumer.assign([TopicPartition("revenue-per-user", p, OFFSET_BEGINNING) for p in range(4)])
    totals: dict[str, dict] = {}
    received, started, last_print = 0, time.monotonic(), 0.0
    try:
        while time.monotonic() - started < seconds + 8:
            for m in consumer.consume(1000, 0.5):
                if m.error() is None:
                    totals[m.key().decode()] = orjson.loads(m.value())
                    received += 1
            now = time.monotonic() - started
            if totals and now - last_print >= 2:
                _print_table(totals, received, now)
                last_print = now
            if worker.poll() is not None:
                print(f"worker exited early with code {worker.returncode}")
                return 1
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
        worker.terminate()
        code = worker.wait(60)
        print(f"\nworker stopped (exit {code}); state was in {state_dir}")
        if broker:
            broker.stop()
    return 0 if received else 1
