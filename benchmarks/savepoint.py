"""Savepoint rates for a large state: `savepoint create` and `savepoint restore` of
revenue_per_user holding one entry per user, and the new application's worker restoring it.

One Apache Kafka broker (or Tansu) in a temp dir; `--keys` orders, one per user, produced to a
4-partition `orders` topic; one exactly-once worker processes them and stops when idle; then
each command runs as a subprocess (`python -m processor ...`, as a user runs it) and is timed
from outside, with its peak RSS (wait4); a worker of the restored application starts and the time
until every store is restored is read from its log; finally `orders` grows to 8 partitions and
the same savepoint is restored into a third application (a rescaling restore), timed.

    python -m benchmarks.savepoint --keys 1000000 --out benchmarks/results/savepoint.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
from confluent_kafka.admin import AdminClient, NewPartitions

from benchmarks.harness import new_broker, write_report
from processor.tools.generator import create_topic, produce_json
from processor.tools.worker_process import ROOT, WorkerProcess, worker_command

TOPOLOGY = ROOT / "topologies" / "revenue_per_user.yaml"
PARTITIONS = 4


def one_order_per_user(keys: int, seed: int = 11) -> Iterator[tuple[str, dict[str, Any]]]:
    """`keys` paid orders, user u0..u{keys-1} once each, in a shuffled order."""
    users = list(range(keys))
    random.Random(seed).shuffle(users)
    for i, u in enumerate(users):
        yield f"o{i}", {"user": f"u{u}", "amount": 1 + (u % 500), "status": "paid",
                        "country": "de", "ts": 1_700_000_000_000 + i}


def timed(cmd: list[str], work: Path, label: str) -> dict[str, Any]:
    """Run a CLI command; its wall time, peak RSS (MB, sampled every 20 ms: wait4's ru_maxrss
    would include the benchmark's own memory, copied at fork) and stdout."""
    out_path, err_path = work / f"{label}.out", work / f"{label}.err"
    began = time.monotonic()
    peak = 0
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=err)
        watched = psutil.Process(proc.pid)
        while proc.poll() is None:
            with contextlib.suppress(psutil.Error):
                peak = max(peak, watched.memory_info().rss)
            time.sleep(0.02)
    seconds = time.monotonic() - began
    if proc.returncode != 0:
        raise RuntimeError(f"{label} failed ({proc.returncode}): {err_path.read_text()[-2000:]}")
    return {"seconds": round(seconds, 2), "peak_rss_mb": round(peak / 2**20, 1),
            "stdout": out_path.read_text().strip()}


def dir_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def run(broker_kind: str, keys: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="savepoint-bench-"))
    broker = new_broker(broker_kind, work, "bench")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if broker_kind == "tansu":
        env["PROCESSOR_GROUP_PROTOCOL"] = "classic"
    with broker:
        boot = broker.bootstrap
        create_topic(boot, "orders", PARTITIONS)
        create_topic(boot, "revenue-per-user", PARTITIONS)
        t = time.monotonic()
        produce_json(boot, "orders", one_order_per_user(keys))
        print(f"produced {keys:,} orders in {time.monotonic() - t:.1f}s", file=sys.stderr)

        t = time.monotonic()
        a = WorkerProcess(worker_command(TOPOLOGY, boot, work / "state-a",
                                         guarantee="exactly_once", stop_when_idle="10s"),
                          work / "a.log", env)
        if a.wait(3600) != 0:
            raise RuntimeError("worker A failed:\n" + a.log_text())
        processed_s = time.monotonic() - t
        print(f"application A processed them in {processed_s:.1f}s", file=sys.stderr)

        sp = work / "sp"
        cli = [sys.executable, "-m", "processor"]
        create = timed([*cli, "savepoint", "create", str(TOPOLOGY), "--to", str(sp),
                        "--bootstrap-servers", boot], work, "create")
        manifest = json.loads((sp / "manifest.json").read_text())
        changelog_read = sum(s["changelog_records_read"] for s in manifest["stores"].values())
        entries = sum(sum(s["entries"].values()) for s in manifest["stores"].values())
        size = dir_bytes(sp)
        print(create["stdout"], file=sys.stderr)

        target = work / "revenue-b.yaml"
        target.write_text(re.sub(r"(?m)^name: .*$", "name: revenue-b", TOPOLOGY.read_text()))
        restore = timed([*cli, "savepoint", "restore", str(sp), str(target),
                         "--bootstrap-servers", boot], work, "restore")
        written = int(re.search(r": (\d+) records", restore["stdout"]).group(1))
        print(restore["stdout"], file=sys.stderr)

        t = time.monotonic()
        b = WorkerProcess(worker_command(target, boot, work / "state-b",
                                         guarantee="exactly_once", stop_when_idle="5s"),
                          work / "b.log", env)
        b.wait_for_log("store restored", timeout=1800, count=PARTITIONS)
        worker_restore_s = time.monotonic() - t
        restored = sum(e["records"] for e in b.find("store restored"))
        b.wait(600)

        # rescaling: the same savepoint into a third application after `orders` grew to 8
        admin = AdminClient({"bootstrap.servers": boot})
        for fut in admin.create_partitions([NewPartitions("orders", 2 * PARTITIONS)]).values():
            fut.result()
        rescaled_topology = work / "revenue-c.yaml"
        rescaled_topology.write_text(re.sub(r"(?m)^name: .*$", "name: revenue-c",
                                            TOPOLOGY.read_text()))
        rescale = timed([*cli, "savepoint", "restore", str(sp), str(rescaled_topology),
                         "--bootstrap-servers", boot], work, "rescale")
        rescaled_written = int(re.search(r": (\d+) records", rescale["stdout"]).group(1))
        print(rescale["stdout"], file=sys.stderr)

    def rate(records: int, nbytes: int, seconds: float) -> dict[str, float]:
        return {"records_per_s": round(records / seconds), "mb_per_s": round(nbytes / seconds / 1e6, 1)}

    return {
        "meta": {"broker": broker_kind, "topology": "revenue_per_user", "partitions": PARTITIONS,
                 "guarantee": "exactly_once", "cpus": os.cpu_count(),
                 "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        "keys": keys,
        "store_entries": entries,
        "changelog_records_read": changelog_read,
        "savepoint_bytes": size,
        "application_a_seconds": round(processed_s, 1),
        "create": {"seconds": create["seconds"], **rate(changelog_read, size, create["seconds"]),
                   "peak_rss_mb": create["peak_rss_mb"]},
        "restore": {"seconds": restore["seconds"], "records_written": written,
                    **rate(written, size, restore["seconds"]),
                    "peak_rss_mb": restore["peak_rss_mb"]},
        "rescaling_restore": {"from_partitions": PARTITIONS, "to_partitions": 2 * PARTITIONS,
                              "seconds": rescale["seconds"], "records_written": rescaled_written,
                              **rate(rescaled_written, size, rescale["seconds"]),
                              "peak_rss_mb": rescale["peak_rss_mb"]},
        "worker_restore": {"seconds_to_all_stores_restored": round(worker_restore_s, 1),
                           "changelog_records_restored": restored},
        "work_dir": str(work),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--broker", choices=["apache", "tansu"], default="apache")
    p.add_argument("--keys", type=int, default=1_000_000, help="distinct users (store entries)")
    p.add_argument("--out", help="write the JSON report here")
    p.add_argument("--keep-work-dir", action="store_true",
                   help="keep the broker's data, the savepoint and the logs")
    args = p.parse_args(argv)
    report = run(args.broker, args.keys)
    if not args.keep_work_dir:
        shutil.rmtree(report.pop("work_dir"), ignore_errors=True)
    write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
