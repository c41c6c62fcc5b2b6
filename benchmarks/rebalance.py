"""What a second worker joining under load costs: the throughput dip, the longest pause, and how
many tasks moved (and were restored), on Apache Kafka or Tansu.

One worker runs revenue_per_user (4 input partitions: 8 tasks, 4 of them stateful) while a
feeder produces at a steady rate; after `--join-after` seconds a second worker joins. Both
expose /metrics, sampled every 100 ms for `processor_records_consumed_total`; the report
gives records/s per second of the run, the dip (slowest second in the 10 s after the join
versus the steady rate before it), the pause (longest stretch in those 10 s in which the first
worker consumed nothing, and in which neither did) and the partitions revoked from the first
worker while both ran.

    python -m benchmarks.rebalance --broker apache --out benchmarks/results/rebalance.json
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime
from pathlib import Path

from benchmarks.harness import new_broker, write_report
from processor.examples.revenue import sample_orders
from processor.tools.broker import free_port
from processor.tools.generator import create_topic, produce_json
from processor.tools.worker_process import WorkerProcess, worker_command

ROOT = Path(__file__).resolve().parents[1]
TOPOLOGY = ROOT / "topologies" / "revenue_per_user.yaml"
WINDOW_S = 10  # the dip and pauses are measured over this many seconds after the join


def consumed(port: int) -> float | None:
    """processor_records_consumed_total summed over its labels, or None if not answering."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=0.5) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("processor_records_consumed_total"))


class Worker(WorkerProcess):
    """One worker of the run, its /metrics on a free port, its log in the work dir."""

    def __init__(self, label: str, bootstrap: str, work: Path, guarantee: str,
                 broker_kind: str) -> None:
        self.label, self.port = label, free_port()
        env = {**os.environ, "PROCESSOR_MAX_POLL_INTERVAL_MS": "6000",
               "PROCESSOR_SESSION_TIMEOUT_MS": "6000", "PYTHONUNBUFFERED": "1"}
        if broker_kind == "tansu":  # no KIP-848 groups there
            env["PROCESSOR_GROUP_PROTOCOL"] = "classic"
        cmd = worker_command(TOPOLOGY, bootstrap, work / f"state-{label}", guarantee=guarantee,
                             worker_id=label, metrics_port=self.port, commit_interval="100ms")
        super().__init__(cmd, work / f"{label}.log", env, new_session=True)
        self.samples: list[tuple[float, float]] = []

    def stop(self) -> None:
        try:
            self.terminate(60)
        except subprocess.TimeoutExpired:
            self.kill()


def sample(workers: list[Worker], combined: list[tuple[float, float]],
           stop: threading.Event) -> None:
    """Each worker's counter, and their sum (progress by anyone), every 100 ms."""
    while not stop.is_set():
        now = time.monotonic()
        for w in workers:
            value = consumed(w.port)
            if value is not None:
                w.samples.append((now, value))
        combined.append((now, sum(w.samples[-1][1] for w in workers if w.samples)))
        stop.wait(0.1)


def per_second(samples: list[tuple[float, float]], t0: float, seconds: int) -> list[float]:
    """Records consumed in each whole second since t0 (a worker not up yet counts 0)."""
    def at(t: float) -> float:
        before = [v for ts, v in samples if ts <= t]
        return before[-1] if before else 0.0
    return [at(t0 + s + 1) - at(t0 + s) for s in range(seconds)]


def longest_stall(samples: list[tuple[float, float]], start: float, end: float) -> float:
    """Longest stretch in [start, end] over which the counter did not move."""
    pts = [(t, v) for t, v in samples if start <= t <= end]
    longest, since = 0.0, None
    for (t0, v0), (t1, v1) in itertools.pairwise(pts):
        if v1 == v0:
            since = t0 if since is None else since
            longest = max(longest, t1 - since)
        else:
            since = None
    return longest


def parse_ts(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def run(broker_kind: str, guarantee: str, rate: float, seconds: int, join_after: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="rebalance-bench-"))
    broker = new_broker(broker_kind, work, "bench")
    with broker:
        create_topic(broker.bootstrap, "orders", 4)
        create_topic(broker.bootstrap, "revenue-per-user", 4)
        first = Worker("first", broker.bootstrap, work, guarantee, broker_kind)
        stop = threading.Event()
        combined: list[tuple[float, float]] = []
        sampler = threading.Thread(target=sample, args=([first], combined, stop), daemon=True)
        sampler.start()
        while not first.find("task running"):
            time.sleep(0.2)
        t0 = time.monotonic()
        orders = sample_orders(int(rate * seconds), users=2000)
        feeder = threading.Thread(target=produce_json, args=(broker.bootstrap, "orders", orders),
                                  kwargs={"rate_per_s": rate}, daemon=True)
        feeder.start()
        time.sleep(join_after)
        t_join = time.monotonic()
        second = Worker("second", broker.bootstrap, work, guarantee, broker_kind)
        stop.set()
        sampler.join()
        stop.clear()
        sampler = threading.Thread(target=sample, args=([first, second], combined, stop),
                                   daemon=True)
        sampler.start()
        feeder.join()
        time.sleep(3)
        stop.set()
        sampler.join()
        t_end = time.time()  # rebalances after this (the workers leaving) are not measured
        second.stop()
        first.stop()
    total = per_second(combined, t0, seconds)
    steady = total[2:join_after]
    after = total[join_after:join_after + WINDOW_S]
    revoked = [len(e["partitions"]) for e in first.find("partitions revoked")
               if parse_ts(e["ts"]) < t_end]
    return {
        "broker": broker_kind, "guarantee": guarantee, "rate_per_s": rate,
        "join_after_s": join_after, "seconds": seconds,
        "assignment": first.find("partitions assigned")[0].get("protocol", "eager (range)"),
        "steady_records_per_s": round(sum(steady) / len(steady)),
        "slowest_second_after_join": round(min(after)),
        "dip_percent": round(100 * (1 - min(after) / (sum(steady) / len(steady))), 1),
        "first_worker_longest_pause_s": round(longest_stall(first.samples, t_join,
                                                           t_join + WINDOW_S), 2),
        "both_longest_pause_s": round(longest_stall(combined, t_join, t_join + WINDOW_S), 2),
        "partitions_revoked_from_first": sum(revoked),
        "revocations": len(revoked),
        "tasks_restored_by_second": len(second.find("store restored")),
        "records_per_second": [round(x) for x in total],
        "work_dir": str(work),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--broker", choices=["apache", "tansu"], default="apache")
    p.add_argument("--guarantee", choices=["exactly_once", "at_least_once"],
                   default="exactly_once")
    p.add_argument("--rate", type=float, default=10_000, help="input records/s")
    p.add_argument("--seconds", type=int, default=40, help="length of the input")
    p.add_argument("--join-after", type=int, default=12, help="seconds before the second worker")
    p.add_argument("--out", help="write the JSON report here")
    args = p.parse_args(argv)
    report = run(args.broker, args.guarantee, args.rate, args.seconds, args.join_after)
    write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
