"""`processor demo`: embedded broker + generator + a topology in a worker subprocess, printing
live results as they arrive on the output topics.

`--example revenue` (default) runs revenue_per_user.yaml and prints per-user totals;
`reconciliation` and `fraud` run the other examples; each example's view lives in
tools/demo_views.py. The harness is the same for all: create the topics, let the view prepare
its inputs, start one exactly-once worker, feed input in a thread, read the outputs
read_committed and let the view print every 2 s.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from processor.runtime.kafka.client_log import CLIENT_LOG
from processor.tools.broker import EmbeddedBroker
from processor.tools.demo_views import DEFAULT_RATES, DemoView, make_view
from processor.tools.generator import create_topic
from processor.tools.worker_process import worker_command


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
        # its warnings go to the terminal, between the view's summaries
        worker = subprocess.Popen(
            worker_command(view.topology, bootstrap, Path(state_dir), log_format="text",
                           commit_interval="500ms"),
            env={"PROCESSOR_MAX_POLL_INTERVAL_MS": "6000",
                 # Tansu has no KIP-848 groups; a cluster of the user's may (Kafka >= 4.0)
                 **({} if external else {"PROCESSOR_GROUP_PROTOCOL": "classic"}),
                 **os.environ, "PROCESSOR_SESSION_TIMEOUT_MS": "6000",
                 "PROCESSOR_LOG_LEVEL": "WARNING", **view.worker_env})
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


def _watch(view: DemoView, worker: subprocess.Popen, bootstrap: str, seconds: float) -> int:
    threading.Thread(target=view.feed, args=(bootstrap,), daemon=True).start()
    consumer = Consumer({"bootstrap.servers": bootstrap, "logger": CLIENT_LOG, "group.id": "demo-viewer",
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
