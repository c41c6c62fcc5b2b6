"""The benchmark's ceilings: each scenario's fraction of the raw loop's rates, and the raw loop's
clients being the worker's own (so the ceiling is a fair one)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.ceiling import ceiling_from_report, ceiling_rates, with_fractions
from benchmarks.harness import Ctx
from benchmarks.raw_loop import raw_clients, raw_command
from benchmarks.report import broker_name, build_report, summary_table
from benchmarks.scenarios import SCENARIOS, topology_info
from processor.runtime.config import load_config
from processor.runtime.kafka.clients import consumer_config, producer_config


def result(scenario: str, guarantee: str, rate: int | None, **extra: Any) -> dict[str, Any]:
    return {"scenario": scenario, "guarantee": guarantee, "targets": [],
            "throughput": {"records_per_s": rate, "worker_cpu_cores": 0.9}, **extra}


RESULTS = [
    result("raw", "exactly_once", 400_000),
    result("raw", "at_least_once", 500_000),
    result("raw_read", "exactly_once", 800_000),
    result("stateless", "exactly_once", 300_000),
    result("aggregate", "at_least_once", 125_000),
    {"scenario": "aggregate_repartition", "guarantee": "exactly_once", "error": "boom",
     "targets": []},
]


def fractions(out: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[Any, Any]]:
    return {(r["scenario"], r["guarantee"]): (r.get("fraction_of_raw"),
                                              r.get("fraction_of_raw_read")) for r in out}


def test_each_scenario_is_a_fraction_of_the_ceilings_of_its_own_guarantee():
    out = with_fractions(RESULTS, ceiling_rates(RESULTS, "this run"))
    assert fractions(out) == {
        ("stateless", "exactly_once"): (0.75, 0.375),
        ("aggregate", "at_least_once"): (0.25, None),  # no raw_read under at_least_once
        # a ceiling is a fraction of the other ceiling, never of itself
        ("raw", "exactly_once"): (None, 0.5),
        ("raw", "at_least_once"): (None, None),
        ("raw_read", "exactly_once"): (2.0, None),
        ("aggregate_repartition", "exactly_once"): (None, None),  # failed: no rate
    }
    assert all("fraction_of_raw" not in r for r in RESULTS)  # the results are not changed


def test_no_fraction_without_a_ceiling_of_the_same_guarantee():
    only_eos = [RESULTS[0], result("aggregate", "at_least_once", 125_000),
                result("stateless", "exactly_once", 0)]
    out = with_fractions(only_eos, ceiling_rates(only_eos, "this run"))
    assert all("fraction_of_raw" not in r and "fraction_of_raw_read" not in r for r in out)


def test_summary_table_shows_the_fractions_and_the_cores():
    table = summary_table(with_fractions(RESULTS, ceiling_rates(RESULTS, "this run")))
    line = next(x for x in table.splitlines() if x.startswith("stateless"))
    assert "300,000" in line and "75%" in line and "38%" in line and "0.90" in line


def write_report(path: Path, broker: str, partitions: int,
                 scenarios: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps({"meta": {"broker": broker, "partitions": partitions},
                                "scenarios": scenarios}))
    return path


def test_an_earlier_report_gives_the_ceilings_only_for_the_same_broker_and_partitions(tmp_path):
    tansu = broker_name("tansu")
    earlier = write_report(tmp_path / "earlier.json", tansu, 4, RESULTS)
    src = str(earlier)
    assert ceiling_from_report(earlier, tansu, 4) == {
        "raw": {"exactly_once": {"records_per_s": 400_000, "source": src},
                "at_least_once": {"records_per_s": 500_000, "source": src}},
        "raw_read": {"exactly_once": {"records_per_s": 800_000, "source": src}}}
    with pytest.raises(ValueError, match="Apache Kafka"):
        ceiling_from_report(earlier, broker_name("apache"), 4)
    with pytest.raises(ValueError, match="8"):
        ceiling_from_report(earlier, tansu, 8)
    no_raw = write_report(tmp_path / "no_raw.json", tansu, 4, RESULTS[3:])
    with pytest.raises(ValueError, match="no `raw`"):
        ceiling_from_report(no_raw, tansu, 4)
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="cannot read"):
        ceiling_from_report(tmp_path / "broken.json", tansu, 4)


def test_the_report_prefers_this_runs_ceilings_and_says_where_each_came_from(tmp_path):
    args = argparse.Namespace(broker="tansu", quick=False, interleave=False, worker_config=None,
                              profile=None)
    ctx = Ctx(args=args, work=tmp_path, records=1000, restore_records=1000, keys=10, partitions=4,
              idle="2s", commit_interval="100ms", latency_rate=1.0, latency_seconds=1.0,
              group_timeout_ms=6000, out_dir=tmp_path, source_at_start={})
    old = {"source": "old.json"}
    earlier = {"raw": {"exactly_once": {"records_per_s": 1_000_000, **old},
                       "at_least_once": {"records_per_s": 600_000, **old}},
               "raw_read": {"at_least_once": {"records_per_s": 1_250_000, **old}}}
    this_run = [RESULTS[0], RESULTS[3], RESULTS[4]]  # raw ran under exactly_once only
    report = build_report(ctx, this_run, 0.0, earlier)
    assert report["meta"]["ceilings"] == {
        "raw": {"exactly_once": {"records_per_s": 400_000, "source": "this run"},
                "at_least_once": {"records_per_s": 600_000, **old}},
        "raw_read": {"at_least_once": {"records_per_s": 1_250_000, **old}}}
    assert fractions(report["scenarios"]) == {
        ("raw", "exactly_once"): (None, None), ("stateless", "exactly_once"): (0.75, None),
        ("aggregate", "at_least_once"): (round(125 / 600, 3), 0.1)}
    assert {"fraction_of_raw", "fraction_of_raw_read"} <= set(report["method"])


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
    assert "--read-only" not in cmd
    assert raw_command(topology, "h:1", guarantee="at_least_once", stop_when_idle="2s",
                       commit_interval="100ms", read_only=True)[-1] == "--read-only"
    assert cmd[:4] == [sys.executable, "-m", "benchmarks.raw_loop", str(topology)]
    flags = dict(zip(cmd[4::2], cmd[5::2], strict=True))
    assert flags == {"--bootstrap-servers": "h:1", "--guarantee": "at_least_once",
                     "--stop-when-idle": "2s", "--commit-interval": "100ms",
                     "--config": str(tmp_path / "w.yaml")}


def test_the_raw_scenarios_read_the_same_orders_as_the_stateless_one():
    raw, read, stateless = SCENARIOS["raw"], SCENARIOS["raw_read"], SCENARIOS["stateless"]
    assert (raw.raw, read.raw, stateless.raw) == ("copy", "read", None)
    for sc in (raw, read):  # the same generator: the same records, the same keys
        assert sc.keys == stateless.keys
        info = topology_info(sc.topology)
        assert info.inputs == topology_info(stateless.topology).inputs
        assert len(info.outputs) == 1 and info.outputs != info.inputs
    assert raw.outputs is not None and raw.outputs(1234) == 1234  # every record copied
    assert read.outputs is not None and read.outputs(1234) == 0  # nothing written


def test_a_pair_a_scenario_cannot_run_on_is_named_and_shown_not_run():
    from benchmarks.scenarios import TANSU_EMPTY_TRANSACTIONS

    assert SCENARIOS["raw_read"].unsupported == {("tansu", "exactly_once"): TANSU_EMPTY_TRANSACTIONS}
    assert all(not sc.unsupported for name, sc in SCENARIOS.items() if name != "raw_read")
    skipped = {"scenario": "raw_read", "guarantee": "exactly_once", "targets": [],
               "skipped": TANSU_EMPTY_TRANSACTIONS}
    out = with_fractions([skipped, *RESULTS], ceiling_rates([skipped, *RESULTS], "this run"))
    assert out[0] == skipped
    line = summary_table(out).splitlines()[2]
    assert line.split()[:2] == ["raw_read", "exactly_once"] and "not run: Tansu drops" in line
