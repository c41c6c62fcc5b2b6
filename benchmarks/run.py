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

# The command line (this module: options and the plan of runs). The rest, by duty:
# scenarios.py (what is measured), harness.py (workers, brokers, settings), data.py (input and
# counts read back), runs.py (throughput, latency, restore), analysis.py (log -> numbers),
# report.py (JSON report, summary table).

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/run.py`: make the `benchmarks` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.ceiling import ceiling_from_report
from benchmarks.harness import Ctx, WorkerError, kill_all_workers, progress
from benchmarks.report import broker_name, build_report, source_fingerprint, summary_table, write_report
from benchmarks.runs import run_scenario, run_throughput
from benchmarks.scenarios import BENCH, GUARANTEES, SCENARIOS

DEFAULT_OUT = BENCH / "results" / "latest.json"


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
    p.add_argument("--processes", type=int, default=1, metavar="N",
                   help="run each worker as `processor run --processes N` (N group members "
                        "under one command; CPU summed over them, peak RSS the largest member's)")
    p.add_argument("--raw-from", metavar="REPORT",
                   help="an earlier report (same broker and partitions) whose `raw` / `raw_read` "
                        "results give `fraction_of_raw` / `fraction_of_raw_read` where this run "
                        "does not measure them")
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
    args.ceiling = None
    if args.raw_from:
        try:
            args.ceiling = ceiling_from_report(Path(args.raw_from), broker_name(args.broker),
                                               args.partitions)
        except ValueError as exc:
            p.error(f"--raw-from: {exc}")
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
        source_at_start=source_fingerprint(),
        repeat=args.repeat or (1 if q or args.profile else 3),
        customers=args.customers,
        scenario_records=args.scenario_records,
        processes=args.processes,
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
    for sc, guarantee in plan:
        why = sc.unsupported.get((args.broker, guarantee))
        if why:
            progress(f"{sc.name} / {guarantee}: not run on {args.broker}: {why}")
            results.append({"scenario": sc.name, "guarantee": guarantee, "skipped": why,
                            "targets": []})
    plan = [(sc, g) for sc, g in plan if (args.broker, g) not in sc.unsupported]
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
            write_report(out, build_report(ctx, results, started, args.ceiling))
    except KeyboardInterrupt:
        interrupted = True
        progress("interrupted: stopping workers and brokers")
    finally:
        kill_all_workers()
        if args.keep_work_dir or any(r.get("error") for r in results):
            progress(f"worker logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    report = build_report(ctx, results, started, args.ceiling)
    write_report(out, report)
    if report["meta"]["processor_source_changed_during_run"]:
        progress("WARNING: processor/ sources changed during the run: the numbers mix code versions")
    print(summary_table(report["scenarios"]))
    print(f"targets passed: {report['targets_passed']}/{report['targets_total']}; "
          f"total {report['meta']['duration_s']:.0f}s; report: {out}")
    if interrupted:
        return 130
    return 1 if any(r.get("error") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
