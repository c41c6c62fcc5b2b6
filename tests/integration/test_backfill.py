"""Backfill then live on a real broker: the GMV dashboard (key_by, 1 s tumbling windows, final
results) over a history file up to a switch time, then live from its topic.

The history file holds every order before the switch and, past it, some the live topic also
has (left out by event time); the live topic holds the history's last orders too (skipped by
the switch offsets), then every order from the switch on, each with its event time as Kafka
timestamp. The switch falls inside a window, so that window holds history and live orders:
its state must cross the hand-over. After `processor backfill` and a worker run to the end of
the live input, the output topic holds every window once, equal to the oracle over history +
live (what one streaming run over both on one topic gives: test_event_time.py), so nothing is
missing, nothing counted twice. The same after kill -9 of the backfill before its outputs
commit, and after they commit while the restore is half done (changelogs written, offsets
not): the rerun starts over, or resets and restores from the kept state."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from processor.tools.generator import create_topic
from tests.integration.kafka import ROOT, WorkerProcess, read_all, topology_file
from tests.integration.test_event_time import (
    HOUR_MS,
    _assert_matches,
    _flush_records,
    _jittered_orders,
    gmv_oracle,
)

pytestmark = pytest.mark.integration

ORDERS = 3000  # 10 ms apart: 30 s of event time
PARTITIONS = 4


class Backfill:
    def __init__(self, bootstrap: str, tmp: Path, unique: str, *, in_topic: bool = False) -> None:
        """`in_topic`: the history is the live topic itself, up to the switch (no file)."""
        self.bootstrap, self.tmp = bootstrap, tmp
        self.input, self.output, self.late = f"orders-{unique}", f"gmv-{unique}", f"late-{unique}"
        orders = [(k, {**o, "id": k}) for k, o in _jittered_orders(ORDERS, seed=5)]
        start = min(o["ts"] for _, o in orders)
        self.switch = start + 20_005  # inside the window [start + 20 s, start + 21 s)
        self.history = [(k, o) for k, o in orders if o["ts"] < self.switch]
        self.live = [(k, o) for k, o in orders if o["ts"] >= self.switch]
        self.topology = topology_file(tmp, "gmv_dashboard.yaml", f"gmv-{unique}", {
            "name: gmv-dashboard": f"name: gmv-{unique}",
            "topic: orders": f"topic: {self.input}",
            "topic: gmv-per-second": f"topic: {self.output}",
            "topic: gmv-late-orders": f"topic: {self.late}",
            "idle_timeout: 10s}\n": "idle_timeout: 10s}\n    backfill:\n"
                                    + ("" if in_topic else
                                       "      file: {path: history.jsonl, key: id}\n")
                                    + f"      switch: {{timestamp: {self.switch}}}\n",
        })
        # the file runs past the switch; the topic starts before it
        (tmp / "history.jsonl").write_bytes(
            b"".join(orjson.dumps(o) + b"\n" for _, o in self.history + self.live[:200]))
        create_topic(bootstrap, self.input, PARTITIONS)
        end = max(o["ts"] for _, o in orders) + HOUR_MS
        flush = [(k, {**o, "id": k}, p) for k, o, p in _flush_records(PARTITIONS, end)]
        on_topic = self.history if in_topic else self.history[-300:]
        self._produce([(k, o, None) for k, o in on_topic + self.live] + flush)

    def _produce(self, records: list[tuple[str, dict[str, Any], int | None]]) -> None:
        producer = Producer({"bootstrap.servers": self.bootstrap, "partitioner": "murmur2_random",
                             "linger.ms": 5, "enable.idempotence": True})
        for key, value, partition in records:
            extra = {} if partition is None else {"partition": partition}
            producer.produce(self.input, orjson.dumps(value), key.encode(),
                             timestamp=value["ts"], **extra)
        assert producer.flush(30) == 0

    def backfill(self, crash_at: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "PROCESSOR_CRASH_AT"}
        if crash_at:
            env["PROCESSOR_CRASH_AT"] = crash_at
        return subprocess.run(
            [sys.executable, "-m", "processor", "backfill", str(self.topology),
             "--bootstrap-servers", self.bootstrap, "--state-dir", str(self.tmp / "state"),
             "--log-format", "json"],
            cwd=ROOT, env=env, text=True, capture_output=True, timeout=180)

    def ok(self, run: subprocess.CompletedProcess[str]) -> str:
        errors = [line for line in run.stderr.splitlines() if not line.startswith("{")]
        assert run.returncode == 0, (run.stdout, errors)
        assert "Traceback" not in run.stderr
        return run.stdout

    def live_run_equals_oracle(self) -> None:
        worker = WorkerProcess(self.topology, self.bootstrap, self.tmp / "state", self.tmp,
                               idle="4s")
        assert worker.wait(180) == 0, worker.log_text()[-4000:]
        seen: dict[tuple[str, int], list[tuple[int, float]]] = {}
        for _, value, _ in read_all(self.bootstrap, self.output):
            v = orjson.loads(value)
            seen.setdefault((v["country"], v["second"]), []).append((v["orders"], v["gmv"]))
        repeated = {k: v for k, v in seen.items() if len(v) > 1}
        assert not repeated, f"windows emitted more than once: {list(repeated.items())[:3]}"
        want = gmv_oracle(self.history + self.live)
        _assert_matches({k: v[0] for k, v in seen.items()}, want)
        spanning = self.switch // 1000 * 1000
        assert any(second == spanning for _, second in want), "a window spans the switch"
        assert read_all(self.bootstrap, self.late) == [], "no order is late"


def test_backfill_then_live_equals_one_streaming_run(broker, tmp_path: Path, unique: str) -> None:
    broker.require_aborted_isolation("outputs without duplicates across the hand-over")
    sc = Backfill(broker.bootstrap, tmp_path, unique)
    early = WorkerProcess(sc.topology, broker.bootstrap, tmp_path / "state", tmp_path)
    assert early.wait(60) == 2, early.log_text()[-2000:]  # not before the backfill handed over
    assert "run `processor backfill" in early.log_text(), early.log_text()[-2000:]
    out = sc.ok(sc.backfill())
    assert f"{len(sc.history)} history row(s) read, 200 at or after the switch" in out, out
    sc.live_run_equals_oracle()
    again = sc.ok(sc.backfill())
    assert "already done" in again, again
    # another backfill (another switch) into the application that now runs live: refused
    sc.topology.write_text(sc.topology.read_text().replace(str(sc.switch), str(sc.switch + 1)))
    other = sc.backfill()
    assert other.returncode == 2 and "Traceback" not in other.stderr, other.stderr[-2000:]
    assert "has committed offsets (backfill(s) " in other.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("point, resumed", [("backfill.before_commit:1", False),
                                            ("backfill.committed:1", True),
                                            ("savepoint.restore.before_offsets:1", True)])
def test_backfill_killed_then_rerun_is_exactly_once(broker, tmp_path: Path, unique: str,
                                                    point: str, resumed: bool) -> None:
    broker.require_aborted_isolation("outputs without duplicates across the hand-over")
    sc = Backfill(broker.bootstrap, tmp_path, unique)
    killed = sc.backfill(crash_at=point)
    assert killed.returncode == -9, (killed.stdout, killed.stderr[-3000:])
    out = sc.ok(sc.backfill())
    assert ("resetting the application and restoring again" in out) == resumed, out
    sc.live_run_equals_oracle()


def test_backfill_from_the_topic_itself_then_live_equals_one_streaming_run(
        broker, tmp_path: Path, unique: str) -> None:
    """A new application over a long-retained topic: its history (the offsets before the
    switch) in batch, then live from the switch offsets; every record once."""
    broker.require_aborted_isolation("outputs without duplicates across the hand-over")
    sc = Backfill(broker.bootstrap, tmp_path, unique, in_topic=True)
    out = sc.ok(sc.backfill())
    assert "in its topic" in out, out
    sc.live_run_equals_oracle()
