"""A bounded, seeded, Jepsen-style fault campaign against a stateful topology.

The campaign starts its own Apache Kafka broker (it kills it: never the session broker other
tests share), feeds seeded input at a steady rate from a thread, keeps 2-4 worker processes in
one consumer group and, while the input flows, applies a seeded schedule of faults:

- kill_worker / kill_worker_fresh_state: kill -9, then restart under the same worker id (its
  transactional id fences the dead one) on the same state dir, or on an empty one (restore
  from the changelog, as on a new machine);
- pause_worker: SIGSTOP for longer than the session timeout (the group moves its partitions
  while it may hold an open transaction), then SIGCONT: a zombie;
- join_worker / leave_worker: a new member; SIGTERM to a member, which must exit 0;
- kill_broker: kill -9 of the broker, restart on the same log directories and port.

Between faults the campaign plays the orchestrator: a worker that exited on its own is
restarted (and reported), and a worker whose loop stopped turning for STUCK_S (its /healthz,
what the Helm chart's liveness probe reads) is killed, its stacks logged first, and restarted
(reported as a liveness restart). Then the input stops, sentinels close every window and
interval, every worker gets SIGTERM (exit 0 expected) and a last worker drains with
`--stop-when-idle`; campaign_check.py reads the outputs read_committed and compares them with
the oracles. Fault kinds depend only on (seed, number of faults); targets and pauses come from
the same seed; what the system does meanwhile does not, which is the point.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from processor.tools.apache_kafka import ApacheKafkaBroker
from processor.tools.broker import free_port
from processor.tools.generator import create_topic
from tests.integration import campaign_check as cc
from tests.integration import joins_scenario as js
from tests.integration.kafka import WorkerProcess

KINDS = ("kill_worker", "kill_worker_fresh_state", "pause_worker", "join_worker",
         "leave_worker", "kill_broker")
WEIGHTS = {"kill_worker": 3.0, "kill_worker_fresh_state": 1.0, "pause_worker": 2.0,
           "join_worker": 2.0, "leave_worker": 2.0, "kill_broker": 1.5}
SESSION_TIMEOUT_S = 6.0  # WorkerProcess's and the broker's session timeouts
STUCK_S = 30.0           # liveness: a loop that has not turned for this long is restarted
LIVE_S = 3.0             # a loop that turned this recently can take a SIGTERM at once
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
    kinds: tuple[str, ...] = KINDS             # the fault kinds to draw from
    tail_s: float = 3.0                        # input keeps flowing after the last fault
    drain_idle: str = "5s"
    drain_timeout_s: float = 600.0


def schedule(n: int, seed: int, start: int, lo: int, hi: int,
             pool: tuple[str, ...] = KINDS) -> list[str]:
    """`n` fault kinds from `pool`: first every kind once (in a seeded order, as far as the
    worker count allows), then weighted draws. Joins and leaves keep the count in [lo, hi]."""
    rng = random.Random(seed)
    pending = list(pool)
    rng.shuffle(pending)
    kinds, count = [], start
    for _ in range(n):
        allowed = [k for k in pool if (k != "join_worker" or count < hi)
                   and (k != "leave_worker" or count > lo)]
        first = next((k for k in pending if k in allowed), None)
        kind = first or rng.choices(allowed, [WEIGHTS[k] for k in allowed])[0]
        if first:
            pending.remove(first)
        count += (kind == "join_worker") - (kind == "leave_worker")
        kinds.append(kind)
    return kinds


@dataclass
class Slot:
    """A worker id with its current process, HTTP port and state dir generation."""
    worker_id: str
    state_gen: int = 0
    port: int = 0
    proc: WorkerProcess | None = None

    def loop_age(self) -> float | None:
        """Seconds since the worker's loop last turned (/healthz); None: no answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1) as r:
                body = r.read()
        except urllib.error.HTTPError as exc:  # 503: stuck, with the same body
            body = exc.read()
        except (OSError, ValueError):
            return None
        try:
            return float(json.loads(body)["seconds_since_loop"])
        except (ValueError, KeyError, TypeError):
            return None


class Campaign:
    def __init__(self, cfg: CampaignConfig, workdir: Path) -> None:
        self.cfg, self.workdir = cfg, workdir
        self.unique = f"s{cfg.seed}-{uuid.uuid4().hex[:6]}"
        self.rng = random.Random(cfg.seed + 1)  # targets and timings; kinds use `seed`
        self.live: list[Slot] = []
        self.n_slots = 0
        self.fault_log: list[dict[str, Any]] = []
        self.unexpected: list[dict[str, Any]] = []
        self.liveness: list[dict[str, Any]] = []
        self.procs: list[WorkerProcess] = []
        self.logs = workdir / "workers"
        self.logs.mkdir(parents=True, exist_ok=True)
        # the input's event times are in 2023 and outputs carry them as timestamps: with the
        # default 7-day time retention the broker would delete output segments under the checker
        self.broker = ApacheKafkaBroker(data_dir=workdir / "kafka", install=True,
                                        settings={"log.retention.ms": "-1"})
        self.started = time.monotonic()

    def _now(self) -> float:
        return round(time.monotonic() - self.started, 2)

    # -- workers -------------------------------------------------------------------------------

    def _spawn(self, slot: Slot, *, idle: str | None = None) -> WorkerProcess:
        state = self.workdir / f"state-{slot.worker_id}-{slot.state_gen}"
        slot.port = free_port()
        # PYTHONFAULTHANDLER: SIGABRT makes the worker write every thread's stack to its log
        # before it dies: where a stuck worker hung
        slot.proc = WorkerProcess(
            self.topology, self.broker.bootstrap, state, self.logs, guarantee=self.cfg.guarantee,
            worker_id=slot.worker_id, idle=idle,
            env={"PYTHONFAULTHANDLER": "1", "PROCESSOR_METRICS_PORT": str(slot.port)})
        self.procs.append(slot.proc)
        return slot.proc

    def _add_worker(self) -> Slot:
        self.n_slots += 1
        slot = Slot(f"w{self.n_slots}-{self.unique}")
        self._spawn(slot)
        self.live.append(slot)
        return slot

    def _evidence(self, slot: Slot, what: str, **fields: Any) -> dict[str, Any]:
        assert slot.proc is not None
        lines = [line for line in slot.proc.log_path.read_text(errors="replace").splitlines()
                 if not line.startswith("%")]  # librdkafka's own stderr chatter
        return {"worker": slot.worker_id, "what": what, "t": self._now(),
                "log": slot.proc.log_path.name, **fields, "tail": lines[-30:]}

    def _abort(self, slot: Slot) -> None:
        """SIGABRT (stacks into the log), then kill -9 if it is still there."""
        assert slot.proc is not None
        slot.proc.proc.send_signal(signal.SIGABRT)
        try:
            slot.proc.proc.wait(10)
        except subprocess.TimeoutExpired:
            slot.proc.kill()

    def _stop(self, slot: Slot, what: str, timeout: float) -> int | None:
        """Wait for the worker's exit (after a SIGTERM, or a bounded run); anything but exit 0
        within `timeout` is a finding."""
        assert slot.proc is not None
        try:
            rc: int | None = slot.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._abort(slot)
            rc = None
        if rc != 0:
            self.unexpected.append(self._evidence(slot, what, exit=rc))
        return rc

    def _watch(self, seconds: float, phase: str) -> None:
        """The orchestrator's duties for `seconds`: restart workers that exited on their own
        (a finding) and, as a liveness probe would, workers whose loop is stuck."""
        deadline = time.monotonic() + seconds
        while True:
            for slot in self.live:
                assert slot.proc is not None
                rc = slot.proc.proc.poll()
                if rc is not None:
                    self.unexpected.append(self._evidence(slot, f"exited {phase}", exit=rc))
                    self._spawn(slot)
                elif (age := slot.loop_age()) is not None and age > STUCK_S:
                    self._abort(slot)
                    self.liveness.append(self._evidence(slot, f"loop stuck {phase}",
                                                        stuck_s=age))
                    self._spawn(slot)
            if time.monotonic() >= deadline:
                return
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))

    def _settle(self, timeout: float = 120) -> None:
        """Wait until every worker's loop turns (restarting stuck ones), e.g. before SIGTERMs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ages = [s.loop_age() for s in self.live]
            if all(a is not None and a < LIVE_S for a in ages):
                return
            self._watch(1.0, "while settling")

    # -- faults --------------------------------------------------------------------------------

    def _apply(self, i: int, kind: str) -> None:
        t0 = time.monotonic()
        entry: dict[str, Any] = {"i": i, "kind": kind, "t": self._now(),
                                 "workers_before": len(self.live)}
        if kind == "kill_broker":
            # not while a worker is still starting: one that cannot read the cluster metadata
            # at start exits 2 by design (`cannot read cluster metadata`), not a finding here
            deadline = time.monotonic() + 30
            while any(s.loop_age() is None for s in self.live) and time.monotonic() < deadline:
                time.sleep(0.5)
            killed = time.monotonic()
            self.broker.kill()
            time.sleep(self.rng.uniform(0.0, 3.0))
            self.broker.start(timeout=180)
            entry["down_s"] = round(time.monotonic() - killed, 2)
        elif kind == "join_worker":
            entry["worker"] = self._add_worker().worker_id
        else:
            # a graceful leave is of a member whose loop turns (a stuck one is the liveness
            # probe's business); kills and pauses hit anyone
            if kind == "leave_worker":
                self._settle()
            ages = {s.worker_id: s.loop_age() for s in self.live}
            turning = [s for s in self.live
                       if (age := ages[s.worker_id]) is not None and age < LIVE_S]
            slot = self.rng.choice(turning if kind == "leave_worker" and turning else self.live)
            entry["worker"] = slot.worker_id
            assert slot.proc is not None
            if kind in ("kill_worker", "kill_worker_fresh_state"):
                slot.proc.kill()
                time.sleep(self.rng.uniform(0.0, 2.0))
                slot.state_gen += kind == "kill_worker_fresh_state"
                self._spawn(slot)
            elif kind == "pause_worker":
                pause = SESSION_TIMEOUT_S + self.rng.uniform(1.0, 3.0)
                slot.proc.proc.send_signal(signal.SIGSTOP)
                time.sleep(pause)
                slot.proc.proc.send_signal(signal.SIGCONT)
                entry["paused_s"] = round(pause, 2)
            elif kind == "leave_worker":
                self.live.remove(slot)
                slot.proc.proc.send_signal(signal.SIGTERM)
                entry["exit"] = self._stop(slot, "leave_worker", 60)
        entry["seconds"] = round(time.monotonic() - t0, 2)
        self.fault_log.append(entry)

    def _drain(self) -> dict[str, Any]:
        """SIGTERM every member (each must exit 0), then one worker on a state dir of its own
        (a full restore) reads everything to the end and stops when idle."""
        self._settle()
        for slot in self.live:
            assert slot.proc is not None
            slot.proc.proc.send_signal(signal.SIGTERM)
        for slot in self.live:
            self._stop(slot, "drain: SIGTERM", 60)
        t0 = time.monotonic()
        final = Slot(f"drain-{self.unique}")
        self._spawn(final, idle=self.cfg.drain_idle)
        rc = self._stop(final, "drain: final worker", self.cfg.drain_timeout_s)
        # its last word (what stayed open, which partitions held the watermark) explains a loss
        last = self._evidence(final, "drain")["tail"][-12:]
        return {"final_worker_exit": rc, "final_worker_s": round(time.monotonic() - t0, 1),
                "final_worker_log": final.proc.log_path.name if final.proc else None,
                "final_worker_tail": last}

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
        for role in ("orders", "payments"):
            create_topic(self.broker.bootstrap, t[role], js.PARTITIONS[role])
        self.topology = self.workdir / "campaign.yaml"
        self.topology.write_text(cc.topology_yaml(name, t))
        # enough input for a slow run: about 15 s per fault at the configured rate
        seconds = 60 + cfg.faults * (15 + sum(cfg.gap) / 2)
        data = cc.input_data(int(seconds * cfg.rate / RECORDS_PER_ORDER) + 1000, cfg.seed)
        kinds = schedule(cfg.faults, cfg.seed, cfg.workers, cfg.min_workers, cfg.max_workers,
                         cfg.kinds)
        for _ in range(cfg.workers):
            self._add_worker()
        feeder = cc.Feeder(self.broker.bootstrap, t, data, cfg.rate)
        feeder.start()
        first = self.live[0].proc
        assert first is not None
        first.wait_for_log("task running", timeout=120)
        faults_started = time.monotonic()
        for i, kind in enumerate(kinds):
            self._watch(self.rng.uniform(*cfg.gap), f"before fault {i}")
            self._apply(i, kind)
        faults_s = time.monotonic() - faults_started
        self._watch(cfg.tail_s, "after the faults")
        feeder.halt.set()
        feeder.join()
        js.produce_sentinels(self.broker.bootstrap,
                             {"orders": t["orders"], "payments": t["payments"]}, data)
        drain = self._drain()
        orders = data.orders[:feeder.sent["orders"]]
        payments = data.payments[:feeder.sent["payments"]]
        in_topics = {role: _end_offset_sum(self.broker.bootstrap, t[role]) - js.PARTITIONS[role]
                     for role in ("orders", "payments")}  # less the sentinels
        checked = cc.check(self.broker.bootstrap, t, orders, payments,
                           {"late records": t["late"], "dead letters": f"{name}-dlq"})
        report: dict[str, Any] = {
            "guarantee": cfg.guarantee, "seed": cfg.seed, "faults_requested": cfg.faults,
            "fault_kinds": list(cfg.kinds),
            "faults": dict(Counter(e["kind"] for e in self.fault_log)),
            "duration_s": self._now(), "faults_s": round(faults_s, 1),
            "rate_per_s": cfg.rate, **checked,
            "input": {"sent": dict(feeder.sent), "in_topics": in_topics,
                      "errors": feeder.errors, "ran_out": feeder.exhausted},
            "unexpected_exits": self.unexpected, "liveness_restarts": self.liveness,
            "drain": drain, "worker_errors": self._worker_errors(),
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
    """0 lost, final state equal to the oracle, input intact, every worker exited 0 when told
    to and none on its own, and under exactly_once 0 duplicates. Liveness restarts are
    reported, not failed: restarting a stuck worker is the deployment's answer to it."""
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
