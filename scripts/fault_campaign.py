"""Run a seeded fault campaign (tests/integration/campaign.py) and print its report.

Needs Apache Kafka's jars (`bash scripts/install-kafka.sh`) and Java; run from the repo root:

    .venv/bin/python scripts/fault_campaign.py --faults 100 --seed 7 \\
        --guarantee exactly_once --json benchmarks/results/fault_campaign_exactly_once.json

Exit 0 when the report is clean (0 lost, final state equal to the oracle, no worker exited on
its own, and 0 duplicates under exactly_once), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `tests.integration` is importable from a checkout

from tests.integration.campaign import KINDS, CampaignConfig, run_campaign  # noqa: E402


def summary(r: dict) -> str:
    lines = [
        f"fault campaign: {r['guarantee']}, seed {r['seed']}, {sum(r['faults'].values())} faults "
        f"in {r['faults_s']} s, {r['duration_s']} s in all",
        f"  faults by kind: {json.dumps(r['faults'], sort_keys=True)}",
        f"  records in: {r['records_in']['total']} ({r['records_in']['orders']} orders, "
        f"{r['records_in']['payments']} payments); records out: {r['records_out']['total']} "
        f"{json.dumps({k: v for k, v in r['records_out'].items() if k != 'total'})}",
        f"  lost: {r['lost']['total']}; duplicated: {r['duplicated']['total']} "
        f"{json.dumps({k: v for k, v in r['duplicated'].items() if k != 'total'})}",
        f"  final state equals the oracle: {r['final_state']['ok']}"
        + ("" if r["final_state"]["ok"] else f" ({r['final_state']['diffs'][:3]})"),
        f"  workers that did not exit 0 when told to, or exited on their own: "
        f"{len(r['unexpected_exits'])}; stuck workers restarted (liveness): "
        f"{len(r['liveness_restarts'])}",
        f"  worker error lines: {json.dumps(r['worker_errors'])}",
        f"  verdict: {'OK' if r['ok'] else 'FAILED'}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--faults", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--guarantee", choices=["exactly_once", "at_least_once"],
                    default="exactly_once")
    ap.add_argument("--rate", type=float, default=300.0, help="input records per second")
    ap.add_argument("--gap", type=float, nargs=2, default=(1.0, 4.0), metavar=("MIN", "MAX"),
                    help="seconds between two faults")
    ap.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS),
                    help="fault kinds to draw from (default: all)")
    ap.add_argument("--json", type=Path, help="write the full report here")
    ap.add_argument("--workdir", type=Path, help="keep broker data and worker logs here")
    args = ap.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="fault-campaign-"))
    workdir.mkdir(parents=True, exist_ok=True)
    # SIGTERM unwinds like Ctrl-C: the campaign's finally stops its workers and its broker
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    cfg = CampaignConfig(faults=args.faults, seed=args.seed, guarantee=args.guarantee,
                         rate=args.rate, gap=tuple(args.gap), kinds=tuple(args.kinds))
    try:
        report = run_campaign(cfg, workdir)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    print(summary(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
