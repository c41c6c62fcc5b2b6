"""A bounded, seeded, Jepsen-style fault campaign against a stateful topology.

The campaign starts its own Apache Kafka broker (it kills it: never the session broker other
tests share), feeds seeded input at a steady rate from a thread, keeps 2-4 worker processes in
one consumer group and, while the input flows, applies a seeded schedule of faults:

- kill_worker / kill_worker_fresh_state: kill -9, then restart under the same worker id (its
  transactional id fences the dead one) on the same state dir, or on an empty one (restore
  from the changelog, as on a new machine);
- pause_worker: SIGSTOP for longer than the session timeout (the group moves its partitions
  while it still holds an open transaction), then SIGCONT (a zombie that must be fenced);
- join_worker / leave_worker: a new member; SIGTERM to a member, which must exit 0;
- kill_broker: kill -9 of the broker, restart on the same log directories and port.

Then the input stops, sentinels close every window and interval, every worker gets SIGTERM
(exit 0 expected) and a last worker drains with `--stop-when-idle`; the checker
(campaign_check.py) reads the outputs read_committed and compares them with the oracles.
The schedule of fault kinds depends only on (seed, number of faults); targets and pauses come
from the same seed; what the system does meanwhile does not, which is the point.
"""

from __future__ import annotations

import heapq
import random
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

from processor.runtime.apache_kafka import ApacheKafkaBroker
from processor.runtime.generator import create_topic
from tests.integration import campaign_check as cc
from tests.integration import joins_scenario as js
from tests.integration.kafka import WorkerProcess

KINDS = ("kill_worker", "kill_worker_fresh_state", "pause_worker", "join_worker",
         "leave_worker", "kill_broker")
WEIGHTS = {"kill_worker": 3.0, "kill_worker_fresh_state": 1.0, "pause_worker": 2.0,
           "join_worker": 2.0, "leave_worker": 2.0, "kill_broker": 1.5}
SESSION_TIMEOUT_S = 6.0  # WorkerProcess sets PROCESSOR_SESSION_TIMEOUT_MS=6000
RECORDS_PER_ORDER = 2.18  # an order brings ~1.18 payments (joins_scenario.generate)


@dataclass
class CampaignConfig:
    faults: int = 10
    seed: int = 1
    guarantee: str = "exactly_once"
    rate: float = 300.0                        # input records per second
    gap: tuple[float, float] = (1.0, 4.0)      # seconds between two faults
    workers: int = 3                           # at the start; kept within [min, max]
    min_workers: int = 2
    max_workers: int = 4
    tail_s: float = 3.0                        # input keeps flowing after the last fault
    drain_idle: str = "5s"
    drain_timeout_s: float = 600.0


def schedule(n: int, seed: int, start: int, lo: int, hi: int) -> list[str]:
    """`n` fault kinds: first every kind once (in a seeded order, as far as the worker count
    allows), then weighted draws. Joins and leaves keep the count within [lo, hi]."""
    rng = random.Random(seed)
    pending = list(KINDS)
    rng.shuffle(pending)
    kinds, count = [], start
    for _ in range(n):
        allowed = [k for k in KINDS if (k != "join_worker" or count < hi)
                   and (k != "leave_worker" or count > lo)]
        first = next((k for k in pending if k in allowed), None)
        kind = first or rng.choices(allowed, [WEIGHTS[k] for k in allowed])[0]
        if first:
            pending.remove(first)
        count += (kind == "join_worker") - (kind == "leave_worker")
        kinds.append(kind)
    return kinds


class Feeder(threading.Thread):
    """Produces the input in (noisy) event-time order at a steady rate until stopped. What was
    sent is a prefix of each topic's list: the oracle's input."""

    def __init__(self, bootstrap: str, topics: dict[str, str], data: js.JoinData,
                 rate: float) -> None:
        super().__init__(name="campaign-feeder", daemon=True)
        self.bootstrap, self.topics, self.data, self.rate = bootstrap, topics, data, rate
        self.sent = {"orders": 0, "payments": 0}
        self.errors: list[str] = []
        self.exhausted = False
        self.halt = threading.Event()

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is not None and len(self.errors) < 20:
            self.errors.append(f"delivery to {msg.topic()} failed: {err.str()}")

    def run(self) -> None:
        p = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 5,
                      "enable.idempotence": True, "partitioner": "murmur2_random",
                      "queue.buffering.max.messages": 1_000_000, "on_delivery": self._delivered})
        flows = [[(v["ts"], role, k, v) for k, v in getattr(self.data, role)]
                 for role in ("orders", "payments")]
        started = time.monotonic()
        try:
            for n, (_, role, key, value) in enumerate(heapq.merge(*flows, key=lambda r: r[0])):
                if self.halt.is_set():
                    break
                while True:
                    try:
                        p.produce(self.topics[role], orjson.dumps(value), key.encode())
                        break
                    except BufferError:
                        p.poll(0.1)
                self.sent[role] += 1
                if n % 50 == 0:
                    p.poll(0)
                    ahead = n / self.rate - (time.monotonic() - started)
                    if ahead > 0:
                        self.halt.wait(ahead)
            else:
                self.exhausted = True
            left = p.flush(300)
            if left:
                self.errors.append(f"{left} input records not delivered within 300 s")
        except Exception as exc:  # a fatal producer error: the report says so
            self.errors.append(f"feeder failed: {exc!r}")


@dataclass
class Slot:
    """A worker id with its current process and state dir generation."""
    worker_id: str
    state_gen: int = 0
    proc: WorkerProcess | None = None
    history: list[str] = field(default_factory=list)


class Campaign:
    def __init__(self, cfg: CampaignConfig, workdir: Path) -> None:
        self.cfg, self.workdir = cfg, workdir
        self.unique = f"s{cfg.seed}-{uuid.uuid4().hex[:6]}"
        self.rng = random.Random(cfg.seed + 1)  # targets and timings; kinds use `seed`
        self.live: list[Slot] = []
        self.n_slots = 0
        self.fault_log: list[dict[str, Any]] = []
        self.unexpected: list[dict[str, Any]] = []
        self.procs: list[WorkerProcess] = []
        self.logs = workdir / "workers"
        self.logs.mkdir(parents=True, exist_ok=True)
        # the input's event times are in 2023 and outputs carry them as timestamps: with the
        # default 7-day time retention the broker would delete output segments under the checker
        self.broker = ApacheKafkaBroker(data_dir=workdir / "kafka", install=True,
                                        settings={"log.retention.ms": "-1"})
        self.started = time.monotonic()

    # -- workers -------------------------------------------------------------------------------

    def _spawn(self, slot: Slot, *, idle: str | None = None) -> WorkerProcess:
        state = self.workdir / f"state-{slot.worker_id}-{slot.state_gen}"
        # PYTHONFAULTHANDLER: a worker stuck past its SIGTERM gets SIGABRT, which makes it
        # write every thread's stack to its log before it dies: where it hung
        proc = WorkerProcess(self.topology, self.broker.bootstrap, state, self.logs,
                             guarantee=self.cfg.guarantee, worker_id=slot.worker_id, idle=idle,
                             env={"PYTHONFAULTHANDLER": "1"})
        slot.history.append(proc.log_path.name)
        self.procs.append(proc)
        return proc

    def _add_worker(self) -> Slot:
        self.n_slots += 1
        slot = Slot(f"w{self.n_slots}-{self.unique}")
        slot.proc = self._spawn(slot)
        self.live.append(slot)
        return slot

    def _unexpected(self, slot: Slot, phase: str, rc: int | None) -> None:
        assert slot.proc is not None
        lines = [line for line in slot.proc.log_path.read_text(errors="replace").splitlines()
                 if not line.startswith("%")]  # librdkafka's own stderr chatter
        self.unexpected.append({"worker": slot.worker_id, "phase": phase, "exit": rc,
                                "t": self._now(), "log": slot.proc.log_path.name,
                                "tail": lines[-40:]})

    def _reap(self, phase: str) -> None:
        """A worker that exited on its own is a finding; restart it (as an orchestrator would)
        so the campaign goes on."""
        for slot in self.live:
            assert slot.proc is not None
            rc = slot.proc.proc.poll()
            if rc is not None:
                self._unexpected(slot, phase, rc)
                slot.proc = self._spawn(slot)

    def _now(self) -> float:
        return round(time.monotonic() - self.started, 2)

    # -- faults --------------------------------------------------------------------------------

    def _apply(self, i: int, kind: str) -> None:
        t0 = time.monotonic()
        entry: dict[str, Any] = {"i": i, "kind": kind, "t": self._now(),
                                 "workers_before": len(self.live)}
        if kind == "kill_broker":
            self.broker.kill()
            down = self.rng.uniform(0.0, 3.0)
            time.sleep(down)
            self.broker.start(timeout=180)
            entry["down_s"] = round(time.monotonic() - t0, 2)
        elif kind == "join_worker":
            entry["worker"] = self._add_worker().worker_id
        else:
            slot = self.rng.choice(self.live)
            entry["worker"] = slot.worker_id
            assert slot.proc is not None
            if kind in ("kill_worker", "kill_worker_fresh_state"):
                slot.proc.kill()
                time.sleep(self.rng.uniform(0.0, 2.0))
                if kind == "kill_worker_fresh_state":
                    slot.state_gen += 1
                slot.proc = self._spawn(slot)
            elif kind == "pause_worker":
                pause = SESSION_TIMEOUT_S + self.rng.uniform(1.0, 3.0)
                slot.proc.proc.send_signal(signal.SIGSTOP)
                time.sleep(pause)
                slot.proc.proc.send_signal(signal.SIGCONT)
                entry["paused_s"] = round(pause, 2)
            elif kind == "leave_worker":
                self.live.remove(slot)
                entry["exit"] = rc = self._terminate(slot)
                if rc != 0:
                    self._unexpected(slot, "leave_worker", rc)
        entry["seconds"] = round(time.monotonic() - t0, 2)
        self.fault_log.append(entry)

    def _terminate(self, slot: Slot, timeout: float = 60) -> int | None:
        assert slot.proc is not None
        try:
            return slot.proc.terminate(timeout)
        except subprocess.TimeoutExpired:
            return self._abort(slot)

    def _abort(self, slot: Slot) -> int | None:
        """SIGABRT (stacks into the log, see _spawn), then kill -9. Returns None: no exit code."""
        assert slot.proc is not None
        slot.proc.proc.send_signal(signal.SIGABRT)
        try:
            slot.proc.proc.wait(10)
        except subprocess.TimeoutExpired:
            slot.proc.kill()
        return None

    def _drain(self) -> dict[str, Any]:
        """SIGTERM every member (each must exit 0), then one worker reads everything to the end
        and stops when idle."""
        for slot in self.live:
            assert slot.proc is not None
            slot.proc.proc.send_signal(signal.SIGTERM)
        for slot in self.live:
            rc = self._terminate(slot)
            if rc != 0:
                self._unexpected(slot, "drain_sigterm", rc)
        t0 = time.monotonic()
        final = Slot(f"drain-{self.unique}")  # a state dir of its own: a full restore
        final.proc = self._spawn(final, idle=self.cfg.drain_idle)
        rc = self._wait(final, self.cfg.drain_timeout_s)
        if rc != 0:
            self._unexpected(final, "drain_final", rc)
        return {"final_worker_exit": rc, "final_worker_s": round(time.monotonic() - t0, 1)}

    def _wait(self, slot: Slot, timeout: float) -> int | None:
        assert slot.proc is not None
        try:
            return slot.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return self._abort(slot)

    # -- the run -------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        self.broker.start()
        try:
            return self._run()
        finally:
            for proc in self.procs:
                proc.kill()
            self.broker.close()

    def _run(self) -> dict[str, Any]:
        cfg = self.cfg
        t = cc.topics(self.unique)
        name = f"campaign-{self.unique}"
        create_topic(self.broker.bootstrap, t["orders"], js.PARTITIONS["orders"])
        create_topic(self.broker.bootstrap, t["payments"], js.PARTITIONS["payments"])
        self.topology = self.workdir / "campaign.yaml"
        self.topology.write_text(cc.topology_yaml(name, t))
        # enough input for a slow run: about 15 s per fault at the configured rate
        seconds = 60 + cfg.faults * (15 + sum(cfg.gap) / 2)
        data = cc.input_data(int(seconds * cfg.rate / RECORDS_PER_ORDER) + 1000, cfg.seed)
        kinds = schedule(cfg.faults, cfg.seed, cfg.workers, cfg.min_workers, cfg.max_workers)
        for _ in range(cfg.workers):
            self._add_worker()
        feeder = Feeder(self.broker.bootstrap, t, data, cfg.rate)
        feeder.start()
        first = self.live[0].proc
        assert first is not None
        first.wait_for_log("task running", timeout=120)
        faults_started = time.monotonic()
        for i, kind in enumerate(kinds):
            time.sleep(self.rng.uniform(*cfg.gap))
            self._reap(f"before fault {i}")
            self._apply(i, kind)
        faults_s = time.monotonic() - faults_started
        time.sleep(cfg.tail_s)
        self._reap("after the faults")
        feeder.halt.set()
        feeder.join()
        js.produce_sentinels(self.broker.bootstrap,
                             {"orders": t["orders"], "payments": t["payments"]}, data)
        drain = self._drain()
        orders = data.orders[:feeder.sent["orders"]]
        payments = data.payments[:feeder.sent["payments"]]
        sentinels = {role: js.PARTITIONS[role] for role in ("orders", "payments")}
        in_topics = {role: _end_offset_sum(self.broker.bootstrap, t[role]) - sentinels[role]
                     for role in ("orders", "payments")}
        checked = cc.check(self.broker.bootstrap, t, orders, payments,
                           {"late records": t["late"], "dead letters": f"{name}-dlq"})
        report: dict[str, Any] = {
            "guarantee": cfg.guarantee, "seed": cfg.seed, "faults_requested": cfg.faults,
            "faults": dict(Counter(e["kind"] for e in self.fault_log)),
            "duration_s": self._now(), "faults_s": round(faults_s, 1),
            "rate_per_s": cfg.rate, **checked,
            "input": {"sent": dict(feeder.sent), "in_topics": in_topics,
                      "errors": feeder.errors, "ran_out": feeder.exhausted},
            "unexpected_exits": self.unexpected, "drain": drain,
            "worker_errors": self._worker_errors(),
            "fault_log": self.fault_log,
        }
        report["ok"] = verdict(report)
        return report

    def _worker_errors(self) -> dict[str, int]:
        """Error-level log lines of every worker, by message: evidence of recoveries."""
        seen: Counter[str] = Counter()
        for proc in self.procs:
            seen.update(r.get("msg", "?") for r in proc.logs() if r.get("level") == "error")
        return dict(seen)


def verdict(report: dict[str, Any]) -> bool:
    """0 lost, final state equal to the oracle, input intact, no worker exited on its own, and
    under exactly_once 0 duplicates."""
    inp = report["input"]
    return (report["lost"]["total"] == 0 and report["final_state"]["ok"]
            and not report["unexpected_exits"] and not inp["errors"]
            and inp["sent"] == inp["in_topics"]
            and (report["guarantee"] != "exactly_once" or report["duplicated"]["total"] == 0))


def _end_offset_sum(bootstrap: str, topic: str) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"ends-{uuid.uuid4().hex}"})
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts)
    finally:
        c.close()


def run_campaign(cfg: CampaignConfig, workdir: Path) -> dict[str, Any]:
    return Campaign(cfg, workdir).run()
