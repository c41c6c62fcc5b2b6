"""The benchmark's workers and brokers: each worker a real `python -m processor run` subprocess
(processor/tools/worker_process.py, as in the tests) whose JSON log lines are parsed as they
arrive and whose memory and CPU are sampled; one broker per run; the run's settings (`Ctx`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from benchmarks.raw_loop import raw_command
from benchmarks.scenarios import Scenario
from processor.tools.apache_kafka import ApacheKafkaBroker
from processor.tools.broker import EmbeddedBroker
from processor.tools.worker_process import WorkerProcess, parse_event, worker_command

_T0 = time.monotonic()
_LIVE: list[MeasuredWorker] = []


def progress(msg: str) -> None:
    print(f"[{time.monotonic() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def parse_ts(ts: str | None) -> float | None:
    if not ts:
        return None
    try:
        return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


class WorkerError(RuntimeError):
    pass


class MeasuredWorker(WorkerProcess):
    """A worker whose JSON log lines are parsed as they arrive (`events`, each with its time
    `_t`), reaped with wait4() for its rusage, its RSS and CPU sampled every 50 ms.

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
        self.on_event = on_event
        self.wrapped = wrapped  # under py-spy or --processes: workers are children of the process
        self.events: list[dict[str, Any]] = []
        self.returncode: int | None = None
        self.ru_maxrss_kb: int | None = None
        self.cpu_s: float | None = None
        self.rss_peak = 0  # bytes: max of the sampled RSS and VmHWM
        self.parent_hwm_kb = _vm_hwm_kb(os.getpid()) or 0  # what ru_maxrss inherits
        self.samples: list[tuple[float, float, float]] = []  # (time, worker cpu s, broker cpu s)
        self.started = time.time()
        # its own session: the group holds only this worker (and py-spy when profiling)
        super().__init__(cmd, log_path, env, new_session=True, on_line=self._on_line)
        _LIVE.append(self)
        self._ps = psutil.Process(self.pid)
        self._broker = psutil.Process(broker_pid) if broker_pid else None
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    # background threads

    def _on_line(self, line: bytes, arrived: float) -> None:
        ev = parse_event(line)
        if ev is None:
            return
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

    # control: reaped with wait4(), never by subprocess (which would drop the rusage)

    def poll(self) -> int | None:
        if self.returncode is not None:
            return self.returncode
        pid, status, ru = os.wait4(self.pid, os.WNOHANG)
        if pid == 0:
            return None
        self.returncode = os.waitstatus_to_exitcode(status)
        self.proc.returncode = self.returncode
        self.ru_maxrss_kb = ru.ru_maxrss
        self.cpu_s = ru.ru_utime + ru.ru_stime
        self.join_reader()
        if self in _LIVE:
            _LIVE.remove(self)
        return self.returncode

    def wait(self, timeout: float = 120) -> int:
        deadline = time.monotonic() + timeout
        while (code := self.poll()) is None:
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.proc.args, timeout)
            time.sleep(0.02)
        return code

    def await_exit(self, timeout: float, until: Callable[[], bool] | None = None) -> bool:
        """Wait for exit (True) or for `until()` (False); on timeout kill and raise."""
        deadline = time.monotonic() + timeout
        while True:
            if self.poll() is not None:
                return True
            if until is not None and until():
                return False
            if time.monotonic() > deadline:
                self.kill()
                raise WorkerError(f"{self.label}: timed out after {timeout:.0f}s; log: {self.log_path}")
            time.sleep(0.02)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        with suppress(subprocess.TimeoutExpired):
            self.wait(10)

    def check_exit(self) -> None:
        if self.returncode not in (0, None):
            tail = self.log_path.read_text(errors="replace").splitlines()[-15:]
            raise WorkerError(f"{self.label}: worker exited with {self.returncode}; log "
                              f"{self.log_path}:\n  " + "\n  ".join(tail))

    # log queries

    def logs(self) -> list[dict[str, Any]]:
        return list(self.events)

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


@dataclass
class Ctx:
    """The run's settings, from the command line and its defaults."""

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
    source_at_start: dict[str, Any]  # which processor/ code is measured (report.source_fingerprint)
    repeat: int = 1
    customers: int = 10_000  # rows of the customers table (enrichment scenarios)
    scenario_records: dict[str, int] = field(default_factory=dict)  # per-scenario --records
    processes: int = 1  # `processor run --processes N`: the workers are children of the command

    def records_for(self, sc: Scenario) -> int:
        return self.scenario_records.get(sc.name, self.records)

    def commit_interval_s(self) -> float:
        from processor.timeutil import parse_duration_ms

        return parse_duration_ms(self.commit_interval) / 1000

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
                     profile_to: Path | None = None, raw: str | None = None,
                     on_event: Callable[[dict[str, Any]], None] | None = None) -> MeasuredWorker:
        """A worker running `topology`, or with `raw` ("copy" | "read") the raw loop over its
        topics (benchmarks/raw_loop.py: the same clients and commits, no processing)."""
        config = Path(self.args.worker_config).resolve() if self.args.worker_config else None
        if raw:
            cmd = raw_command(topology, bootstrap, guarantee=guarantee,
                              stop_when_idle=idle or self.idle,
                              commit_interval=self.commit_interval, config=config,
                              read_only=raw == "read")
        else:
            cmd = worker_command(topology, bootstrap, state_dir, guarantee=guarantee,
                                 stop_when_idle=idle or self.idle,
                                 commit_interval=self.commit_interval, config=config)
        if self.processes > 1 and not raw:
            cmd += ["--processes", str(self.processes)]
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
        return MeasuredWorker(label, cmd, self.worker_env(), log_path,
                              broker.proc.pid if broker.proc else None, on_event,
                              wrapped=profile_to is not None or (self.processes > 1 and not raw))


def new_broker(kind: str, work: Path, slug: str) -> EmbeddedBroker | ApacheKafkaBroker:
    """A broker of `kind` (apache | tansu) with its data or log under `work`, not started yet
    (`with` starts and stops it)."""
    if kind == "apache":
        return ApacheKafkaBroker(data_dir=work / f"{slug}-kafka", install=True)
    return EmbeddedBroker(log_file=work / f"{slug}-broker.log")


def write_report(report: dict[str, Any], out: str | None) -> None:
    """A one-scenario benchmark's report: printed, and written to `out` when given."""
    text = json.dumps(report, indent=2)
    print(text)
    if out:
        Path(out).write_text(text + "\n")


@contextmanager
def broker(ctx: Ctx, label: str) -> Iterator[EmbeddedBroker | ApacheKafkaBroker]:
    slug = label.replace("/", "-")
    b = new_broker(ctx.args.broker, ctx.work, slug).start()
    progress(f"{label}: {ctx.args.broker} broker on {b.bootstrap}")
    try:
        yield b
    finally:
        kill_all_workers()
        b.close()
