"""Savepoints on a real broker: application A processes the first half of the input and stops
(a clean stop, or kill -9 with records in flight in its repartition topic), a savepoint is
taken offline, restored into a new application B, and B processes the second half. B's
outputs continue A's on the same output topic: per user the running order count strictly
increases across the cut (nothing processed twice) and the final totals equal the oracle over
both halves (nothing skipped). Also: create refuses while A runs, restore refuses into an
application that is not new, inspect prints the counts."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from processor.examples.revenue import revenue_oracle
from processor.tools.generator import produce_json
from tests.integration.kafka import (
    ROOT,
    WorkerProcess,
    read_all,
    topology_file,
    wait_until_stable,
)
from tests.integration.scenario import RevenueScenario
from tests.integration.test_event_time import (
    HOUR_MS,
    GmvScenario,
    _assert_matches,
    _flush_records,
    _jittered_orders,
    gmv_oracle,
)

pytestmark = pytest.mark.integration

HALF = 3000


def _cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "processor", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=timeout)


def _ok(run: subprocess.CompletedProcess[str]) -> str:
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    return run.stdout


def _refused(run: subprocess.CompletedProcess[str], why: str) -> None:
    assert run.returncode == 2, (run.stdout, run.stderr)
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and why in lines[0], lines


def _create_when_stopped(sc: RevenueScenario, to: Path, timeout: float = 120) -> str:
    """A killed worker stays in the group until its session times out: create refuses until then."""
    deadline = time.monotonic() + timeout
    while True:
        run = _cli("savepoint", "create", str(sc.topology), "--to", str(to),
                   "--bootstrap-servers", sc.bootstrap)
        if run.returncode == 0 or time.monotonic() > deadline:
            return _ok(run)
        _refused(run, "active worker")
        assert not to.exists()
        time.sleep(2)


def _app_b(sc: RevenueScenario) -> Path:
    """The same topology under another name: a new application on the same input and output."""
    return topology_file(sc.tmp, "revenue_per_user.yaml", f"{sc.name}-b", {
        "name: revenue-per-user": f"name: {sc.name}-b",
        "topic: orders": f"topic: {sc.input}",
        "topic: revenue-per-user": f"topic: {sc.output}",
    })


def _expected_entries(sc: RevenueScenario) -> int:
    return len(revenue_oracle(sc.produced))


def _restore_and_finish(sc: RevenueScenario, savepoint: Path) -> None:
    b = _app_b(sc)
    done = _ok(_cli("savepoint", "restore", str(savepoint), str(b),
                    "--bootstrap-servers", sc.bootstrap))
    assert f"into application '{sc.name}-b'" in done
    # B now has offsets and state: a second restore into it is refused
    _refused(_cli("savepoint", "restore", str(savepoint), str(b), "--bootstrap-servers",
                  sc.bootstrap), "committed offsets")
    sc.produce(HALF, seed=2)
    worker_b = WorkerProcess(b, sc.bootstrap, sc.tmp / "state-b", sc.tmp, idle="4s")
    assert worker_b.wait(240) == 0, worker_b.log_text()[-4000:]
    sc.assert_no_repeated_outputs()
    sc.assert_final_state_matches_oracle()


def _manifest(savepoint: Path) -> dict:
    return orjson.loads((savepoint / "manifest.json").read_bytes())


def test_savepoint_after_clean_stop_restores_into_new_application(broker, tmp_path: Path,
                                                                   unique: str) -> None:
    broker.require_aborted_isolation("outputs without duplicates across the cut")
    sc = RevenueScenario(broker.bootstrap, tmp_path, unique)
    sc.produce(HALF, seed=1)
    worker_a = sc.worker(idle="6s")
    worker_a.wait_for_log("task running", timeout=120)
    savepoint = tmp_path / "sp"
    _refused(_cli("savepoint", "create", str(sc.topology), "--to", str(savepoint),
                  "--bootstrap-servers", sc.bootstrap), "active worker")
    assert not savepoint.exists() and not list(tmp_path.glob(".sp.partial-*"))
    assert worker_a.wait(240) == 0, worker_a.log_text()[-4000:]

    out = _create_when_stopped(sc, savepoint)
    manifest = _manifest(savepoint)
    users = _expected_entries(sc)
    store = manifest["stores"]["totals"]
    assert sum(store["entries"].values()) == users
    assert store["changelog"] == f"{sc.name}-totals-changelog"
    assert sum(manifest["source_offsets"][sc.input]["committed"].values()) == HALF
    assert all(sum(t["records"].values()) == 0 for t in manifest["inflight"].values())
    assert f"{users} entries" in out
    lines = sum(1 for _ in (savepoint / "stores" / "totals").glob("*.jsonl")
                for _ in _.open())
    assert lines == users

    summary = _ok(_cli("savepoint", "inspect", str(savepoint)))
    assert f"store totals: {users} entries in 4 partition(s)" in summary
    shown = _ok(_cli("savepoint", "inspect", str(savepoint), "--store", "totals", "--limit", "5"))
    assert len(shown.splitlines()) == 5 and shown.startswith("[")
    _refused(_cli("savepoint", "inspect", str(savepoint), "--store", "nope"), "no store 'nope'")
    _refused(_cli("savepoint", "create", str(sc.topology), "--to", str(savepoint),
                  "--bootstrap-servers", sc.bootstrap), "already exists")

    _restore_and_finish(sc, savepoint)


def kill_with_records_in_flight(sc: RevenueScenario, savepoint: Path) -> dict:
    """A processes the first half with batches of at most 100 and frequent commits: 3000
    records upstream, then their repartition records downstream; killed at the 45th batch (of
    some 60), it leaves repartition records committed upstream that its aggregate had not
    consumed yet. The savepoint of that is taken; its manifest is returned."""
    sc.produce(HALF, seed=1)
    worker_a = sc.worker(idle="6s", commit_interval="20ms",
                         env={"PROCESSOR_BATCH_SIZE": "100",
                              "PROCESSOR_CRASH_AT": "batch.processed:45"})
    assert worker_a.wait(240) == -9, worker_a.log_text()[-4000:]
    _create_when_stopped(sc, savepoint)
    manifest = _manifest(savepoint)
    inflight = manifest["inflight"][f"{sc.name}-totals-repartition"]
    assert sum(inflight["records"].values()) > 0, manifest
    return manifest


def test_savepoint_keeps_records_in_flight_after_kill(broker, tmp_path: Path,
                                                      unique: str) -> None:
    broker.require_aborted_isolation("outputs without duplicates across the cut")
    sc = RevenueScenario(broker.bootstrap, tmp_path, unique)
    savepoint = tmp_path / "sp"
    manifest = kill_with_records_in_flight(sc, savepoint)
    assert sum(manifest["source_offsets"][sc.input]["committed"].values()) <= HALF
    _restore_and_finish(sc, savepoint)


@pytest.mark.parametrize("stop", ["clean", "kill"])
def test_savepoint_keeps_open_windows_and_event_time(broker, tmp_path: Path, unique: str,
                                                     stop: str) -> None:
    """Tumbling windows after a repartition (topologies/gmv_dashboard.yaml): windows open at
    the cut, the watermark state and the in-band watermark reports go through the savepoint;
    every window is emitted once, with the oracle's result, none late."""
    broker.require_aborted_isolation("that no window is emitted twice across the cut")
    sc = GmvScenario(broker.bootstrap, tmp_path, unique, "exactly_once")
    orders = _jittered_orders(8000, seed=3)
    first, second = orders[:4000], orders[4000:]
    produce_json(sc.bootstrap, sc.input, first)
    env = {"PROCESSOR_BATCH_SIZE": "100"}
    if stop == "kill":
        # 4000 records in batches of at most 100 upstream, then the repartition records: the
        # 60th batch (of some 80) comes mid-input, with records in flight
        env["PROCESSOR_CRASH_AT"] = "batch.processed:60"
        # application b has other transactional ids: it cannot fence a's open transaction,
        # whose window results hold read_committed readers of the output until the broker
        # aborts it at its timeout (README, "Transactional id"): keep that short
        env["PROCESSOR_PRODUCER"] = '{"transaction.timeout.ms": 10000}'
    a = sc.worker(idle="5s", commit_interval="20ms", env=env)
    assert a.wait(180) == (-9 if stop == "kill" else 0), a.log_text()[-4000:]
    savepoint = tmp_path / "sp"
    run = _cli("savepoint", "create", str(sc.topology), "--to", str(savepoint),
               "--bootstrap-servers", sc.bootstrap)
    deadline = time.monotonic() + 120
    while run.returncode != 0 and time.monotonic() < deadline:
        _refused(run, "active worker")
        time.sleep(2)
        run = _cli("savepoint", "create", str(sc.topology), "--to", str(savepoint),
                   "--bootstrap-servers", sc.bootstrap)
    _ok(run)
    manifest = _manifest(savepoint)
    records = manifest["stores"]["gmv"]["position_records"]
    # every position record carries the marks and the event-time state; after a clean stop
    # every partition has one (after the kill, only those the aggregate had committed)
    assert all("time" in r and "upstream" in r for r in records.values()), records
    if stop == "clean":
        assert len(records) == 4, records
    else:
        inflight = manifest["inflight"][f"gmv-{unique}-gmv-repartition"]["records"]
        assert sum(inflight.values()) > 0, manifest

    b = topology_file(tmp_path, "gmv_dashboard.yaml", f"gmv-{unique}-b", {
        "name: gmv-dashboard": f"name: gmv-{unique}-b",
        "topic: orders": f"topic: {sc.input}",
        "topic: gmv-per-second": f"topic: {sc.output}",
        "topic: gmv-late-orders": f"topic: {sc.late}",
    })
    _ok(_cli("savepoint", "restore", str(savepoint), str(b), "--bootstrap-servers", sc.bootstrap))
    produce_json(sc.bootstrap, sc.input, second)
    produce_json(sc.bootstrap, sc.input,
                 _flush_records(4, max(o["ts"] for _, o in orders) + HOUR_MS))
    worker_b = WorkerProcess(b, sc.bootstrap, tmp_path / "state-b", tmp_path,
                             env={"PROCESSOR_BATCH_SIZE": "300"})
    assert worker_b.wait(240) == 0, worker_b.log_text()[-4000:]
    wait_until_stable(sc.bootstrap, sc.output)
    got, repeats = sc.results()
    _assert_matches(got, gmv_oracle(orders))
    assert repeats == 0, f"{repeats} windows emitted twice across the cut"
    assert read_all(broker.bootstrap, sc.late) == [], "no order is late in this input"
