"""`savepoint create --stop-workers` on a real broker: two running workers of revenue-per-user,
input still arriving, are stopped by the command (both exit 0) and the savepoint it writes
equals, entry for entry, the one an offline `create` takes afterwards (store entries, offsets,
position records, in-flight records); restored into a new application that processes the rest
of the input, the outputs equal the oracle with nothing processed twice. Also the refusals:
workers without remote_stop_token, and a group member without an HTTP port (nothing stopped,
nothing written, exit 2, one line); and create's last look failing when the application moved
(a member joined, offsets committed, a changelog grew)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from processor.runtime.config import load_config
from processor.runtime.kafka.clients import admin_config
from processor.tools.broker import free_port
from processor.tools.consumer_group import committed_offsets, members_now
from processor.tools.savepoint import reader, require_unmoved
from processor.tools.savepoint_format import SavepointError
from tests.integration.kafka import ROOT, metric_sum, metrics_text
from tests.integration.scenario import RevenueScenario
from tests.integration.test_http import http_env
from tests.integration.test_savepoint import (
    HALF,
    _cli,
    _manifest,
    _ok,
    _refused,
    _restore_and_finish,
)

pytestmark = pytest.mark.integration

TOKEN = "stop-4f1c"


def _cli_with_token(*args: str, token: str | None = TOKEN) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PROCESSOR_REMOTE_STOP_TOKEN"}
    if token is not None:
        env["PROCESSOR_REMOTE_STOP_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "processor", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=240, env=env)


def _snapshot(savepoint: Path) -> dict[str, object]:
    """Everything a savepoint says about the application: every store and in-flight line per
    file (order-free within a store partition), and the manifest but for when and how fast and
    where the input topics ended at the time."""
    files = {str(p.relative_to(savepoint)): sorted(p.read_bytes().splitlines())
             for p in savepoint.rglob("*.jsonl")}
    manifest = {k: v for k, v in _manifest(savepoint).items()
                if k not in ("created_at", "seconds")}
    # where the input topics ended when each was taken: input still arrives between the two
    for source in manifest["source_offsets"].values():
        source.pop("end_offsets", None)
    return {"files": files, "manifest": manifest}


def _running_workers(sc: RevenueScenario, token: str | None, commit_interval: str = "100ms"
                     ) -> list:
    workers = []
    for i in range(2):
        port = free_port()
        env = http_env(port, PROCESSOR_BATCH_SIZE="100")
        if token is not None:
            env["PROCESSOR_REMOTE_STOP_TOKEN"] = token
        worker = sc.worker(f"w{i}", idle=None, commit_interval=commit_interval, env=env)
        worker.metrics_port = port
        workers.append(worker)
    for w in workers:
        w.wait_for_log("task running", timeout=120)
    return workers


def _wait_for_committed(sc: RevenueScenario, records: int, timeout: float = 120) -> None:
    admin = AdminClient(admin_config(load_config(bootstrap_servers=sc.bootstrap)))
    deadline = time.monotonic() + timeout
    while True:
        done = sum(o for (t, _), o in committed_offsets(admin, sc.name).items() if t == sc.input)
        if done >= records:
            return
        assert time.monotonic() < deadline, f"{done} of {records} input records committed"
        time.sleep(0.5)


def _wait_for_consumed(workers: list, topic: str, records: int, timeout: float = 60) -> None:
    """Until the workers together have consumed `records` of `topic` (their metrics)."""
    deadline = time.monotonic() + timeout
    while True:
        done = sum(metric_sum(metrics_text(w.metrics_port), "processor_records_consumed_total",
                              topic=topic) for w in workers)
        if done >= records:
            return
        assert time.monotonic() < deadline, f"{done:.0f} of {records} {topic} records consumed"
        time.sleep(0.1)


def test_stop_with_savepoint_equals_offline_savepoint_and_restores(broker, tmp_path: Path,
                                                                   unique: str) -> None:
    broker.require_aborted_isolation("outputs without duplicates across the cut")
    sc = RevenueScenario(broker.bootstrap, tmp_path, unique)
    sc.produce(HALF, seed=1)
    # a checkpoint every 5 s while input keeps arriving (8 s of it, 100 records every 0.1 s):
    # at the stop some input is unread, and each worker's final checkpoint commits seconds of
    # work, with repartition records its aggregate can no longer read (in flight)
    workers = _running_workers(sc, TOKEN, commit_interval="5s")
    _wait_for_committed(sc, HALF)  # the first half checkpointed: the stores hold state
    arriving = threading.Thread(target=sc.produce, args=(8000,), kwargs={"seed": 3, "rate": 1000})
    arriving.start()
    # the stop lands while arrivals are being processed, not before the first of them (then the
    # final checkpoints would hold no repartition records: nothing in flight to check)
    _wait_for_consumed(workers, sc.input, HALF + 300)
    stopped = tmp_path / "sp-stop"
    run = _cli_with_token("savepoint", "create", str(sc.topology), "--to", str(stopped),
                          "--stop-workers", "--bootstrap-servers", sc.bootstrap)
    out = _ok(run)
    assert "stopped 2 worker(s)" in out, out
    assert "asking 2 worker(s) to stop" in run.stderr and "leave the group all the same" \
        not in run.stderr, run.stderr
    for w in workers:
        assert w.wait(60) == 0, w.log_text()[-4000:]
        assert w.find("stop requested over HTTP (POST /stop)"), w.log_text()[-2000:]
    arriving.join(60)

    offline = tmp_path / "sp-offline"
    _ok(_cli("savepoint", "create", str(sc.topology), "--to", str(offline),
             "--bootstrap-servers", sc.bootstrap))
    assert _snapshot(stopped) == _snapshot(offline)

    manifest = _manifest(stopped)
    committed = sum(manifest["source_offsets"][sc.input]["committed"].values())
    assert 0 < committed < len(sc.produced), (committed, len(sc.produced))
    inflight = sum(sum(t["records"].values()) for t in manifest["inflight"].values())
    assert inflight > 0, manifest["inflight"]
    assert sum(manifest["stores"]["totals"]["entries"].values()) > 0
    print(f"stop-with-savepoint: {committed} of {len(sc.produced)} input records committed, "
          f"{inflight} in flight, {sum(manifest['stores']['totals']['entries'].values())} entries")
    _restore_and_finish(sc, stopped)


def test_stop_workers_refused_when_workers_do_not_allow_it(broker, tmp_path: Path,
                                                           unique: str) -> None:
    sc = RevenueScenario(broker.bootstrap, tmp_path, unique)
    sc.produce(HALF, seed=1)
    workers = _running_workers(sc, None)
    savepoint = tmp_path / "sp"
    run = _cli_with_token("savepoint", "create", str(sc.topology), "--to", str(savepoint),
                          "--stop-workers", "--bootstrap-servers", sc.bootstrap)
    _refused(run, "does not allow remote stop: set remote_stop_token on the workers")
    assert "nothing was stopped" in run.stderr, run.stderr
    assert run.stderr.count("does not allow remote stop") == 2, run.stderr
    # nothing stopped, nothing written: both still members, the plain create still refuses
    assert all(w.poll() is None for w in workers)
    assert not savepoint.exists() and not list(tmp_path.glob(".sp.partial-*"))
    _refused(_cli("savepoint", "create", str(sc.topology), "--to", str(savepoint),
                  "--bootstrap-servers", sc.bootstrap), "2 active worker(s)")

    # a member without an HTTP port has no directory entry: named, and nothing stopped
    bare = sc.worker("bare", idle=None)
    bare.wait_for_log("task running", timeout=120)
    run = _cli_with_token("savepoint", "create", str(sc.topology), "--to", str(savepoint),
                          "--stop-workers", "--bootstrap-servers", sc.bootstrap)
    _refused(run, "1 group member(s) without an entry in the worker directory")
    assert "stop it yourself, then run create without --stop-workers" in run.stderr
    assert all(w.poll() is None for w in [*workers, bare]) and not savepoint.exists()
    for w in [*workers, bare]:
        assert w.terminate() == 0, w.log_text()[-3000:]
    _moving_application_is_detected(sc)


def _moving_application_is_detected(sc: RevenueScenario) -> None:
    """create's last look (tools/savepoint.py require_unmoved) on the real group: quiet when
    nothing moved; a member that joined, its commits and its changelog writes each fail it."""
    config = load_config(bootstrap_servers=sc.bootstrap)
    admin, consumer = AdminClient(admin_config(config)), reader(config)
    changelog = f"{sc.name}-totals-changelog"

    def highs() -> dict[tuple[str, int], int]:
        return {(changelog, p): consumer.get_watermark_offsets(TopicPartition(changelog, p),
                                                               timeout=15)[1] for p in range(4)}
    try:
        deadline = time.monotonic() + 30
        while members_now(admin, sc.name) and time.monotonic() < deadline:
            time.sleep(0.5)
        committed, ends = committed_offsets(admin, sc.name), highs()
        require_unmoved(admin, consumer, sc.name, committed, ends)  # nothing moved
        sc.produce(500, seed=4)
        again = sc.worker("again", idle="3s")
        again.wait_for_log("task running", timeout=120)
        with pytest.raises(SavepointError, match=r"1 worker\(s\) joined the group while the "
                                                 r"savepoint was taken: .*nothing written"):
            require_unmoved(admin, consumer, sc.name, committed, ends)
        assert again.wait(120) == 0, again.log_text()[-3000:]
        with pytest.raises(SavepointError, match="committed offsets while the savepoint was taken"):
            require_unmoved(admin, consumer, sc.name, committed, ends)
        with pytest.raises(SavepointError, match=rf"{changelog}\[\d\] grew from offset \d+ to"):
            require_unmoved(admin, consumer, sc.name, committed_offsets(admin, sc.name), ends)
    finally:
        consumer.close()
