"""Batch speed: the W1 workload run by `processor batch` over a file, beside the same workload
streamed through a broker on the same machine (issue 16: batch >= 3x the streaming figure).

W1 = benchmarks/topologies/tumbling_totals.yaml (10 s tumbling window, count + sum per user,
emit final) over `generate("user_dense", n, 1000)` orders (data.py: 1,000 users, event time 1 ms
apart). For each size the orders are written once as JSON lines (orjson) and as Parquet
(pyarrow; measured only when processor/runtime/files reads Parquet); each batch run is a real
`python -m processor batch` subprocess, 4 partitions as the streaming topic has, timed from
outside (wall, peak RSS sampled with psutil) and by the run itself (its printed seconds: the
run without interpreter start and imports), median of `--repeat`. Every run's output is
checked: the windows' counts add up to the input. The streaming figure is benchmarks/run.py's
`tumbling` throughput run (exactly_once, same record count, one fresh broker, median of
`--repeat`), whose rate is over its processing window (group join excluded): it is compared
with the batch run's own rate, the like-for-like figure; the wall-clock rate is reported too.

    python -m benchmarks.batch --out benchmarks/results/batch.json
    python -m benchmarks.batch --sizes 200000 --repeat 1 --no-streaming --profile
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from benchmarks.data import generate
from benchmarks.harness import Ctx, kill_all_workers, progress, write_report
from benchmarks.report import source_fingerprint
from benchmarks.savepoint import timed
from benchmarks.scenarios import BENCH, SCENARIOS

TOPOLOGY = BENCH / "topologies" / "tumbling_totals.yaml"
OUTPUT_TOPIC = "user-window-totals"
KEYS = 1000
PARTITIONS = 4
TARGET_RATIO = 3.0
_SUMMARY = re.compile(r"read ([\d,]+) from \S+ rows in ([\d.]+) s")


def write_inputs(n: int, work: Path, parquet: bool) -> dict[str, Path]:
    """The W1 orders as JSON lines (and Parquet), generated once per size."""
    values = [v for _, v in generate("user_dense", n, KEYS)]
    files = {"jsonl": work / f"orders-{n}.jsonl"}
    with open(files["jsonl"], "wb") as f:
        for start in range(0, n, 100_000):
            f.write(b"".join(orjson.dumps(v) + b"\n" for v in values[start:start + 100_000]))
    if parquet:
        import pyarrow as pa
        import pyarrow.parquet as pq

        files["parquet"] = work / f"orders-{n}.parquet"
        pq.write_table(pa.Table.from_pylist(values), files["parquet"], row_group_size=131_072)
    return files


def parquet_readable(work: Path) -> bool:
    """Whether the file readers on this checkout read Parquet (a probe file of 3 rows)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from processor.runtime.files.read import read_rows
    from processor.spec.bounded import FileSourceSpec

    probe = work / "probe.parquet"
    pq.write_table(pa.Table.from_pylist([{"user": "u1", "ts": i} for i in range(3)]), probe)
    try:
        chunks = list(read_rows(FileSourceSpec(path=str(probe)), work))
    except Exception:  # any failure means: not readable here
        return False
    return [r for c in chunks for r in c.rows] == [{"user": "u1", "ts": i} for i in range(3)]


def batch_command(source: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "processor", "batch", str(TOPOLOGY),
            "--input", f"orders={source}", "--key", "orders=user",
            "--partitions", f"orders={PARTITIONS}", "--output", f"{OUTPUT_TOPIC}={out}"]


def batch_run(source: Path, n: int, work: Path, label: str) -> dict[str, Any]:
    """One `processor batch` subprocess: wall time, peak RSS, the run's own time; output checked."""
    out = work / f"{label}.out.jsonl"
    r = timed(batch_command(source, out), work, label)
    m = _SUMMARY.search(r["stdout"])
    if m is None:
        raise RuntimeError(f"{label}: no summary line in {r['stdout']!r}")
    rows, run_s = int(m[1].replace(",", "")), float(m[2])
    windows = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    counted = sum(w["orders"] for w in windows)
    if rows != n or counted != n:
        raise RuntimeError(f"{label}: read {rows:,} rows, windows count {counted:,}, expected {n:,}")
    out.unlink()
    return {"wall_s": r["seconds"], "run_s": run_s, "peak_rss_mb": r["peak_rss_mb"],
            "records_per_s_wall": round(n / r["seconds"]), "records_per_s": round(n / run_s),
            "output_rows": len(windows)}


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median own rate, with every run's rate beside it."""
    ranked = sorted(runs, key=lambda r: r["records_per_s"])
    return {**ranked[len(ranked) // 2], "runs": len(runs),
            "all_records_per_s": [r["records_per_s"] for r in runs]}


def streaming_run(args: argparse.Namespace, n: int, work: Path) -> dict[str, Any]:
    """benchmarks/run.py's `tumbling` throughput run, exactly_once, `n` records, median of
    `--repeat` (each on a fresh broker)."""
    from benchmarks.runs import run_throughput

    ns = argparse.Namespace(broker=args.broker, profile=None, worker_config=None)
    ctx = Ctx(args=ns, work=work, records=n, restore_records=0, keys=KEYS, partitions=PARTITIONS,
              idle="2s", commit_interval="100ms", latency_rate=0, latency_seconds=0,
              group_timeout_ms=6000, out_dir=work, source_at_start={}, repeat=args.repeat)
    runs = []
    for i in range(args.repeat):
        res = run_throughput(ctx, SCENARIOS["tumbling"], "exactly_once",
                             f"tumbling/exactly_once {n:,} #{i + 1}")
        runs.append({"records_per_s": res["records_per_s"], "processing_s": res["processing_s"],
                     "peak_rss_mb": res["peak_rss_mb"]})
    return median_run(runs)


PROFILE_PARTS = {
    # (class, function) -> part of the run; the first met walking down from the root counts
    ("BatchRun", "_open_tasks"): "open tasks (RocksDB stores)",
    ("FileFeeder", "_records"): "rows to records (key, event time, partition)",
    ("EventTime", "observe"): "source watermark (per record)",
    ("Task", "_run"): "operators (window, aggregate, sink)",
    ("BatchRun", "_end_of_input"): "end of input (close windows, flush)",
    ("BatchRun", "_commit"): "commits (flush caches, write stores)",
    ("BatchRun", "_drain"): "repartition hand-over",
}


def profile_batch(source: Path, work: Path) -> dict[str, Any]:
    """One batch run in this process under pyinstrument: seconds per part of the run (file
    reading and parsing = what is left under the feeder), the heaviest frames beside."""
    from pyinstrument import Profiler

    from processor.runtime.batch.engine import BatchRun
    from processor.runtime.config import WorkerConfig
    from processor.spec import load_spec
    from processor.spec.bounded import FileSinkSpec
    from processor.spec.file_overrides import with_files

    loaded = with_files(load_spec(TOPOLOGY), {"orders": str(source)}, keys={"orders": "user"},
                        partitions={"orders": str(PARTITIONS)})
    batch = BatchRun(loaded, WorkerConfig(), files={
        OUTPUT_TOPIC: FileSinkSpec(path=str(work / "profiled.out.jsonl"))})
    profiler = Profiler(interval=0.001)
    with profiler:
        batch.run()
    root = profiler.last_session.root_frame()
    parts: dict[str, float] = {}
    own: dict[str, float] = {}

    def walk(frame: Any, counted: bool, in_feeder: bool, parent: str) -> None:
        key = (frame.class_name, frame.function)
        name = (f"{frame.class_name}.{frame.function}" if frame.class_name
                else f"{frame.function} ({frame.file_path_short})")
        if not counted and key in PROFILE_PARTS:
            parts[PROFILE_PARTS[key]] = parts.get(PROFILE_PARTS[key], 0.0) + frame.time
            counted = True
        if not frame.children:  # a leaf: `[self]` (the parent's own code) or a built-in
            if not counted and in_feeder:
                parts["read and parse files"] = parts.get("read and parse files", 0.0) + frame.time
            leaf = parent if frame.function == "[self]" else name
            own[leaf] = own.get(leaf, 0.0) + frame.time
        in_feeder = in_feeder or key == ("FileFeeder", "chunks")
        for child in frame.children:
            walk(child, counted, in_feeder, name)

    walk(root, False, False, "")
    total = batch.summary.seconds
    parts["other"] = max(0.0, total - sum(parts.values()))
    heaviest = sorted(own.items(), key=lambda kv: -kv[1])[:8]
    return {"run_s": round(total, 2),
            "parts_s": {k: round(v, 3) for k, v in sorted(parts.items(), key=lambda kv: -kv[1])},
            "heaviest_frames_s": {k: round(v, 3) for k, v in heaviest}}


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="batch-bench-"))
    load_before = os.getloadavg()
    parquet = parquet_readable(work)
    if not parquet:
        progress("the file readers here do not read Parquet: JSON lines only")
    sizes: dict[str, Any] = {}
    try:
        for n in args.sizes:
            t = time.monotonic()
            files = write_inputs(n, work, parquet)
            progress(f"{n:,} orders written ({', '.join(files)}) in {time.monotonic() - t:.1f}s")
            entry: dict[str, Any] = {"records": n, "file_bytes": {
                fmt: path.stat().st_size for fmt, path in files.items()}}
            for fmt, path in files.items():
                runs = []
                for i in range(args.repeat):
                    r = batch_run(path, n, work, f"batch-{fmt}-{n}-{i}")
                    progress(f"batch {fmt} {n:,} #{i + 1}: {r['records_per_s']:,} rec/s (run), "
                             f"{r['records_per_s_wall']:,} rec/s (wall {r['wall_s']} s), "
                             f"peak RSS {r['peak_rss_mb']} MB")
                    runs.append(r)
                entry[f"batch_{fmt}"] = median_run(runs)
                if args.profile:
                    entry[f"batch_{fmt}"]["profile"] = profile_batch(path, work)
                    progress(f"profile {fmt} {n:,}: {entry[f'batch_{fmt}']['profile']['parts_s']}")
            if args.streaming:
                s = entry["streaming_exactly_once"] = streaming_run(args, n, work)
                progress(f"streaming {n:,}: {s['records_per_s']:,} rec/s, peak RSS "
                         f"{s['peak_rss_mb']} MB")
                for fmt in files:
                    b = entry[f"batch_{fmt}"]
                    entry[f"ratio_{fmt}"] = round(b["records_per_s"] / s["records_per_s"], 2)
                    entry[f"ratio_{fmt}_wall"] = round(b["records_per_s_wall"] / s["records_per_s"], 2)
            for f in files.values():
                f.unlink()
            sizes[str(n)] = entry
    finally:
        kill_all_workers()
        shutil.rmtree(work, ignore_errors=True)
    ratios = [v for e in sizes.values() for k, v in e.items()
              if k.startswith("ratio_") and not k.endswith("_wall")]
    return {
        "meta": {"workload": "W1: tumbling_totals.yaml, 10 s tumbling count+sum per user, "
                             f"{KEYS} users, event time 1 ms apart",
                 "partitions": PARTITIONS, "repeat": args.repeat, "cpus": os.cpu_count(),
                 "broker": args.broker if args.streaming else None,
                 "parquet_measured": parquet, "source": source_fingerprint(),
                 # the machine's load (1/5/15 min) around the run: a shared machine's noise
                 "load_average_before": [round(x, 2) for x in load_before],
                 "load_average_after": [round(x, 2) for x in os.getloadavg()],
                 "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        "sizes": sizes,
        "target": {"ratio_at_least": TARGET_RATIO,
                   "met": bool(ratios) and min(ratios) >= TARGET_RATIO},
    }


def summary_table(report: dict[str, Any]) -> str:
    lines = [f"{'records':>10} {'input':<10} {'rec/s (run)':>12} {'rec/s (wall)':>13} "
             f"{'peak RSS MB':>12} {'x streaming':>12}"]
    for n, e in report["sizes"].items():
        for key, row in e.items():
            if key.startswith("batch_"):
                fmt = key.removeprefix("batch_")
                ratio = e.get(f"ratio_{fmt}", "")
                lines.append(f"{int(n):>10,} {fmt:<10} {row['records_per_s']:>12,} "
                             f"{row['records_per_s_wall']:>13,} {row['peak_rss_mb']:>12} "
                             f"{ratio:>12}")
        s = e.get("streaming_exactly_once")
        if s:
            lines.append(f"{int(n):>10,} {'streaming':<10} {s['records_per_s']:>12,} {'':>13} "
                         f"{s['peak_rss_mb']:>12} {'1':>12}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.batch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="200000,2000000",
                   help="orders per run, comma-separated (default %(default)s)")
    p.add_argument("--repeat", type=int, default=3, help="runs per case; the median is reported")
    p.add_argument("--broker", choices=["apache", "tansu"], default="tansu",
                   help="the streaming run's broker (default tansu, as benchmarks/run.py)")
    p.add_argument("--no-streaming", dest="streaming", action="store_false",
                   help="batch runs only (no broker)")
    p.add_argument("--profile", action="store_true",
                   help="also run each batch case once in this process under pyinstrument: "
                        "seconds per part of the run in the report (`profile`)")
    p.add_argument("--out", help="write the JSON report here")
    args = p.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",")]
    report = run(args)
    write_report(report, args.out)
    print(summary_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
