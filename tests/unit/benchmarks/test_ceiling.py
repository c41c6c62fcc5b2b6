"""The benchmark's ceiling: each scenario's fraction of the raw loop's rate, and the raw loop's
clients being the worker's own (so the ceiling is a fair one)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.harness import Ctx
from benchmarks.raw_loop import raw_clients, raw_command
from benchmarks.report import (
    broker_name,
    build_report,
    ceiling_from_report,
    raw_rates,
    summary_table,
    with_fractions,
)
from benchmarks.scenarios import SCENARIOS, topology_info
from processor.runtime.config import load_config
from processor.runtime.kafka.clients import consumer_config, producer_config


def result(scenario: str, guarantee: str, rate: int | None, **extra: Any) -> dict[str, Any]:
    return {"scenario": scenario, "guarantee": guarantee, "targets": [],
            "throughput": {"records_per_s": rate, "worker_cpu_cores": 0.9}, **extra}


RESULTS = [
    result("raw", "exactly_once", 400_000),
    result("raw", "at_least_once", 500_000),
    result("stateless", "exactly_once", 300_000),
    result("aggregate", "at_least_once", 125_000),
    {"scenario": "aggregate_repartition", "guarantee": "exactly_once", "error": "boom",
     "targets": []},
]


def test_each_scenario_is_a_fraction_of_the_raw_rate_of_its_own_guarantee():
    out = with_fractions(RESULTS, raw_rates(RESULTS, "this run"))
    by = {(r["scenario"], r["guarantee"]): r for r in out}
    assert by[("stateless", "exactly_once")]["fraction_of_raw"] == 0.75
    assert by[("aggregate", "at_least_once")]["fraction_of_raw"] == 0.25
    # the ceiling itself and a failed scenario have none
    assert "fraction_of_raw" not in by[("raw", "exactly_once")]
    assert "fraction_of_raw" not in by[("aggregate_repartition", "exactly_once")]
    assert all("fraction_of_raw" not in r for r in RESULTS)  # the results are not changed


def test_no_fraction_without_a_raw_run_of_the_same_guarantee():
    only_eos = [RESULTS[0], result("aggregate", "at_least_once", 125_000),
                result("stateless", "exactly_once", 0)]
    out = with_fractions(only_eos, raw_rates(only_eos, "this run"))
    assert [r.get("fraction_of_raw") for r in out] == [None, None, None]


def test_summary_table_shows_the_fraction_and_the_cores():
    table = summary_table(with_fractions(RESULTS, raw_rates(RESULTS, "this run")))
    line = next(x for x in table.splitlines() if x.startswith("stateless"))
    assert "300,000" in line and "75%" in line and "0.90" in line


def write_report(path: Path, broker: str, partitions: int,
                 scenarios: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps({"meta": {"broker": broker, "partitions": partitions},
                                "scenarios": scenarios}))
    return path


def test_an_earlier_report_gives_the_ceiling_only_for_the_same_broker_and_partitions(tmp_path):
    tansu = broker_name("tansu")
    earlier = write_report(tmp_path / "earlier.json", tansu, 4, RESULTS)
    rates = ceiling_from_report(earlier, tansu, 4)
    assert rates == {"exactly_once": {"records_per_s": 400_000, "source": str(earlier)},
                     "at_least_once": {"records_per_s": 500_000, "source": str(earlier)}}
    with pytest.raises(ValueError, match="Apache Kafka"):
        ceiling_from_report(earlier, broker_name("apache"), 4)
    with pytest.raises(ValueError, match="8"):
        ceiling_from_report(earlier, tansu, 8)
    no_raw = write_report(tmp_path / "no_raw.json", tansu, 4, RESULTS[2:])
    with pytest.raises(ValueError, match="no `raw`"):
        ceiling_from_report(no_raw, tansu, 4)
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="cannot read"):
        ceiling_from_report(tmp_path / "broken.json", tansu, 4)


def test_the_report_prefers_this_runs_ceiling_and_says_where_each_came_from(tmp_path):
    args = argparse.Namespace(broker="tansu", quick=False, interleave=False, worker_config=None,
                              profile=None)
    ctx = Ctx(args=args, work=tmp_path, records=1000, restore_records=1000, keys=10, partitions=4,
              idle="2s", commit_interval="100ms", latency_rate=1.0, latency_seconds=1.0,
              group_timeout_ms=6000, out_dir=tmp_path, source_at_start={})
    earlier = {"exactly_once": {"records_per_s": 1_000_000, "source": "old.json"},
               "at_least_once": {"records_per_s": 600_000, "source": "old.json"}}
    this_run = [RESULTS[0], RESULTS[2], RESULTS[3]]  # raw ran under exactly_once only
    report = build_report(ctx, this_run, 0.0, earlier)
    assert report["meta"]["raw_ceiling"] == {
        "exactly_once": {"records_per_s": 400_000, "source": "this run"},
        "at_least_once": {"records_per_s": 600_000, "source": "old.json"}}
    fractions = {r["scenario"]: r.get("fraction_of_raw") for r in report["scenarios"]}
    assert fractions == {"raw": None, "stateless": 0.75, "aggregate": round(125 / 600, 3)}
    assert "fraction_of_raw" in report["method"]


@pytest.fixture
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("PROCESSOR_") or name == "KAFKA_BOOTSTRAP_SERVERS":
            monkeypatch.delenv(name)


@pytest.mark.parametrize("guarantee", ["exactly_once", "at_least_once"])
def test_the_raw_loop_has_the_workers_client_settings(tmp_path, clean_env, monkeypatch, guarantee):
    """What the worker builds in Worker._setup / _new_producer, with a `--worker-config` file
    and the harness's environment layered in as for a worker."""
    worker_yaml = tmp_path / "worker.yaml"
    worker_yaml.write_text("consumer:\n  fetch.wait.max.ms: 10\nproducer:\n  linger.ms: 2\n"
                           "kafka:\n  socket.nagle.disable: 'true'\n")
    monkeypatch.setenv("PROCESSOR_GROUP_PROTOCOL", "classic")
    monkeypatch.setenv("PROCESSOR_SESSION_TIMEOUT_MS", "6000")
    config = load_config(worker_yaml, bootstrap_servers="127.0.0.1:1",
                         processing_guarantee=guarantee, commit_interval_ms="100ms")
    group = topology_info(SCENARIOS["raw"].topology).name
    consumer, producer = raw_clients(config, group)
    eos = guarantee == "exactly_once"
    assert consumer == consumer_config(config, group)
    assert producer == producer_config(config, f"{group}-raw" if eos else None)
    # the settings a fair ceiling depends on, as the worker has them
    assert consumer["isolation.level"] == ("read_committed" if eos else "read_uncommitted")
    assert consumer["fetch.wait.max.ms"] == 10  # the --worker-config override reaches it
    assert consumer["max.partition.fetch.bytes"] == 8 * 1024 * 1024
    assert consumer["session.timeout.ms"] == 6000
    assert consumer["enable.auto.commit"] is False
    assert producer["linger.ms"] == 2 and producer["batch.num.messages"] == 10_000
    assert producer["enable.idempotence"] is True and producer["acks"] == "all"
    assert producer["socket.nagle.disable"] == "true" == consumer["socket.nagle.disable"]
    assert ("transactional.id" in producer) is eos


def test_the_raw_command_runs_the_loop_as_the_worker_is_run(tmp_path):
    topology = SCENARIOS["raw"].topology
    cmd = raw_command(topology, "h:1", guarantee="at_least_once", stop_when_idle="2s",
                      commit_interval="100ms", config=tmp_path / "w.yaml")
    assert cmd[:4] == [sys.executable, "-m", "benchmarks.raw_loop", str(topology)]
    flags = dict(zip(cmd[4::2], cmd[5::2], strict=True))
    assert flags == {"--bootstrap-servers": "h:1", "--guarantee": "at_least_once",
                     "--stop-when-idle": "2s", "--commit-interval": "100ms",
                     "--config": str(tmp_path / "w.yaml")}


def test_the_raw_scenario_reads_the_same_orders_as_the_stateless_one():
    raw, stateless = SCENARIOS["raw"], SCENARIOS["stateless"]
    assert raw.raw and not stateless.raw
    assert raw.keys == stateless.keys  # the same generator: the same records, the same keys
    info = topology_info(raw.topology)
    assert info.inputs == topology_info(stateless.topology).inputs
    assert len(info.outputs) == 1 and info.outputs != info.inputs
    assert raw.outputs is not None and raw.outputs(1234) == 1234  # every record copied
