"""The runs of one scenario x guarantee: throughput (median of --repeat), latency (a
rate-limited run read back live) and restore (a large changelog into a fresh state dir)."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from benchmarks.analysis import (
    CommitTracker,
    analyse_tables,
    analyse_throughput,
    evaluate_targets,
    percentile,
    summarise_profile,
)
from benchmarks.data import (
    count_records,
    generate,
    group_committed,
    high_watermarks,
    prepare_topics,
    produce,
    produce_inputs,
)
from benchmarks.harness import Ctx, MeasuredWorker, WorkerError, broker, progress
from benchmarks.scenarios import MIN_RESTORE_RECORDS, ROOT, Scenario, topology_info
from processor.graph import build_topology
from processor.spec import load_spec
from processor.tools.generator import create_topic


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
        load = [round(x, 2) for x in os.getloadavg()]
        w = ctx.start_worker(f"{label} throughput", sc.topology, b.bootstrap,
                             Path(tempfile.mkdtemp(dir=ctx.work, prefix="state-")), guarantee, b,
                             profile_to=profile_to, raw=sc.raw, on_event=tracker)
        w.await_exit(120 + n / 2000)
        w.check_exit()
        res = analyse_throughput(w, input_topic, n)
        res["load_average_at_start"] = load  # 1, 5, 15 min: what else ran on the machine
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


def _ready(w: MeasuredWorker) -> bool:
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
                             idle="120s", raw=sc.raw, on_event=tracker)
        w.await_exit(60, until=lambda: _ready(w))
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
        w.await_exit(60, until=lambda: tracker.committed >= produced)
        # ... then let downstream stages (repartition) and the collector drain
        quiet_s = max(1.0, 5 * ctx.commit_interval_s())
        deadline = time.monotonic() + 30
        while time.monotonic() - collector.last_msg < quiet_s and time.monotonic() < deadline:
            time.sleep(0.05)
        w.signal(signal.SIGTERM)
        w.await_exit(30)
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
        w1.await_exit(120 + n / 2000)
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
        w2.await_exit(120 + n / 5000, until=lambda: bool(w2.find("task running")) and _ready(w2))
        w2.check_exit()
        w2.signal(signal.SIGTERM)
        w2.await_exit(30)
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

