"""From a worker's log to the numbers: throughput over the processing window, table bootstrap,
latency percentiles, py-spy profile summaries, and the pass/fail of each target."""

from __future__ import annotations

import itertools
import math
import time
from pathlib import Path
from typing import Any

from benchmarks.cost_centres import cost_centres
from benchmarks.harness import MeasuredWorker, WorkerError, progress
from benchmarks.scenarios import Scenario, topic_set


def _tp(name: str) -> tuple[str, int]:
    topic, _, part = name.rpartition("[")
    return topic, int(part.rstrip("]"))


class CommitTracker:
    """Follows `checkpoint committed` log lines: committed input offsets, with progress lines."""

    def __init__(self, label: str, input_topic: str | list[str], total: int) -> None:
        self.label, self.total = label, total
        self.inputs = topic_set(input_topic)
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


def analyse_throughput(w: MeasuredWorker, input_topic: str | list[str], n_input: int) -> dict[str, Any]:
    """Processing window = first input task able to consume -> last committed checkpoint.

    Start: the earliest `task running` of a stateful task on the input topic (its store has
    restored, the partition is resumed), or `partitions assigned` when the input is read by a
    stateless task (it consumes at once). The input is produced in full beforehand, so the
    first fetch returns records immediately. End: the last `checkpoint committed` line (the
    worker then idles for --stop-when-idle, which is not counted). Several input topics: their
    tasks and committed offsets together.
    """
    inputs = topic_set(input_topic)
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


def analyse_tables(w: MeasuredWorker) -> dict[str, Any] | None:
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
    """py-spy raw (collapsed) stacks -> cost centres (benchmarks/cost_centres.py), top lines by
    self time and functions by total time.

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

    return {"file": str(path), "samples": n, "cost_centres": cost_centres(path),
            "top_self": rank(selfc), "top_total": rank(totalc)}


def _strip_line(frame: str) -> str:
    """`fn (path/file.py:123)` -> `fn (path/file.py)`"""
    head, sep, rest = frame.rpartition(":")
    return f"{head})" if sep and rest.rstrip(")").isdigit() else frame



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

