"""`processor reset` on a real broker, with the revenue-per-user topology (a repartition topic
and a changelogged aggregate):

- refused (exit 2, the group and its member named) while a worker runs;
- `--dry-run` prints the plan and changes nothing (offsets, topics, the state directory);
- reset to earliest, run again: the results after the reset equal the oracle (a fresh run),
  the internal topics were re-created with new topic ids, their old committed offsets gone;
- the multi-machine guard: a worker whose state directory the reset did not remove (another
  machine) clears its stale stores, says so, and its results equal the oracle too;
- `--to-datetime` and `--to-latest` set the offsets by the records' timestamps and ends.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from processor.examples.revenue import revenue_oracle
from tests.integration.kafka import ROOT, assert_revenue_matches
from tests.integration.scenario import RevenueScenario

pytestmark = pytest.mark.integration
GUARD_WARNING = "local store does not match its changelog: cleared, restoring from the beginning"


def _reset(sc: RevenueScenario, *args: str) -> subprocess.CompletedProcess[str]:
    run = subprocess.run([sys.executable, "-m", "processor", "reset", str(sc.topology),
                          "--bootstrap-servers", sc.bootstrap, *args], cwd=ROOT, text=True,
                         capture_output=True, timeout=180)
    assert "Traceback" not in run.stderr, run.stderr
    return run


_ADMINS: dict[str, AdminClient] = {}


def _admin(sc: RevenueScenario) -> AdminClient:
    """One client per broker: a client destroyed fails the futures it still owes."""
    return _ADMINS.setdefault(sc.bootstrap, AdminClient({"bootstrap.servers": sc.bootstrap}))


def _committed(sc: RevenueScenario) -> dict[tuple[str, int], int]:
    res = _admin(sc).list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(sc.name)])[sc.name].result()
    return {(tp.topic, tp.partition): tp.offset for tp in res.topic_partitions}


def _topics(sc: RevenueScenario) -> set[str]:
    return {t for t in _admin(sc).list_topics(timeout=10).topics if sc.unique in t}


def _topic_ids(sc: RevenueScenario, topics: list[str]) -> dict[str, str]:
    futures = _admin(sc).describe_topics(TopicCollection(topics))
    return {t: str(f.result().topic_id) for t, f in futures.items()}


def _await_empty_group(sc: RevenueScenario, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while _admin(sc).describe_consumer_groups([sc.name])[sc.name].result().members:
        assert time.monotonic() < deadline, "the stopped worker is still a group member"
        time.sleep(0.5)


def _ends(sc: RevenueScenario, topic: str) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": sc.bootstrap, "group.id": "unused"})
    parts = c.list_topics(topic, timeout=10).topics[topic].partitions
    ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
    c.close()
    return ends


def _results_since(sc: RevenueScenario, starts: dict[int, int]) -> dict[str, dict]:
    """The latest output per user among the sink's records from `starts` (per partition)."""
    c = Consumer({"bootstrap.servers": sc.bootstrap, "group.id": "unused",
                  "enable.partition.eof": True, "isolation.level": "read_committed"})
    c.assign([TopicPartition(sc.output, p, o) for p, o in starts.items()])
    latest: dict[str, dict] = {}
    eof: set[int] = set()
    deadline = time.monotonic() + 60
    while len(eof) < len(starts):
        assert time.monotonic() < deadline, f"no EOF on {sc.output} {sorted(eof)}"
        for m in c.consume(5000, 0.5):
            if m.error() is not None:
                assert m.error().code() == KafkaError._PARTITION_EOF, m.error().str()
                eof.add(m.partition())
            else:
                latest[m.key().decode()] = orjson.loads(m.value())
    c.close()
    return latest


def _run_bounded(sc: RevenueScenario, state: str):
    worker = sc.worker(state=state)
    assert worker.wait(240) == 0, worker.log_text()
    return worker


def test_reset_to_earliest_then_rerun_equals_a_fresh_run(broker, tmp_path: Path, unique: str):
    sc = RevenueScenario(broker.bootstrap, tmp_path, unique)
    sc.produce(3000)
    _run_bounded(sc, "a")
    internal = [f"{sc.name}-totals-changelog", f"{sc.name}-totals-repartition"]
    assert set(internal) <= _topics(sc)
    old_ids = _topic_ids(sc, internal)

    running = sc.worker(state="b", idle=None)
    running.wait_for_log("worker started")
    deadline = time.monotonic() + 60
    while not _admin(sc).describe_consumer_groups([sc.name])[sc.name].result().members:
        assert time.monotonic() < deadline, "the worker never became a group member"
        time.sleep(0.3)
    refused = _reset(sc, "--state-dir", str(tmp_path / "state-a"))
    assert refused.returncode == 2, refused.stdout
    [line] = refused.stderr.strip().splitlines()
    assert line.startswith(f"error: consumer group '{sc.name}' has 1 active member(s): ")
    assert "on 127.0.0.1" in line and "stop every worker" in line
    assert running.terminate() == 0
    _await_empty_group(sc)

    committed, topics = _committed(sc), _topics(sc)
    assert sum(o for (t, _), o in committed.items() if t == sc.input) == 3000
    dry = _reset(sc, "--dry-run", "--state-dir", str(tmp_path / "state-a"))
    assert dry.returncode == 0, dry.stderr
    out = dry.stdout.splitlines()
    assert out[0] == (f"dry run, nothing changed: reset of '{sc.name}' (consumer group "
                      f"{sc.name}) to earliest")
    assert f"topics to delete: {', '.join(internal)}" in out
    assert f"topic kept: {sc.output} (sink)" in out
    assert sum(1 for line in out if line.startswith(f"  {sc.input}[") and line.endswith("-> 0")) == 4
    assert _committed(sc) == committed and _topics(sc) == topics, "the dry run changed something"
    assert (tmp_path / "state-a" / sc.name).is_dir()

    before = _ends(sc, sc.output)
    done = _reset(sc, "--to-earliest", "--state-dir", str(tmp_path / "state-a"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"reset '{sc.name}' (consumer group {sc.name}) to earliest")
    assert f"local state {tmp_path / 'state-a' / sc.name}: removed" in done.stdout
    assert not (tmp_path / "state-a" / sc.name).exists()
    after = _committed(sc)
    assert after == {(sc.input, p): 0 for p in range(4)}, \
        "inputs at their start, the repartition topic's offsets dropped with it"
    assert not set(internal) & _topics(sc) and sc.output in _topics(sc), "sink kept"

    rerun = _run_bounded(sc, "a")
    assert not rerun.find(GUARD_WARNING), "no stale store on a machine the reset cleaned"
    assert_revenue_matches(_results_since(sc, before), revenue_oracle(sc.produced))
    new_ids = _topic_ids(sc, internal)
    assert all(new_ids[t] != old_ids[t] for t in internal), "re-created: new topic ids"


def test_a_worker_with_stale_state_after_a_reset_clears_it(broker, tmp_path: Path, unique: str):
    """The reset runs on another machine (its own state dir): worker A's stores survive and
    point into the deleted changelog; A restores nothing from them and equals the oracle."""
    sc = RevenueScenario(broker.bootstrap, tmp_path, unique)
    sc.produce(3000)
    assert not _run_bounded(sc, "a").find(GUARD_WARNING)
    restarted = _run_bounded(sc, "a")  # the same changelogs: the stores are kept
    assert not restarted.find(GUARD_WARNING) and restarted.find("store restored")
    before = _ends(sc, sc.output)
    done = _reset(sc, "--state-dir", str(tmp_path / "elsewhere"))
    assert done.returncode == 0, done.stderr
    assert "local state" in done.stdout and (tmp_path / "state-a" / sc.name).is_dir()

    rerun = _run_bounded(sc, "a")
    warnings = rerun.find(GUARD_WARNING)
    assert {w["partition"] for w in warnings} == {0, 1, 2, 3}, rerun.log_text()
    assert all(w["store"] == "totals" and "re-created" in w["reason"] for w in warnings)
    assert_revenue_matches(_results_since(sc, before), revenue_oracle(sc.produced))


def test_to_datetime_and_to_latest_set_offsets_by_time_and_end(broker, tmp_path: Path,
                                                               unique: str):
    sc = RevenueScenario(broker.bootstrap, tmp_path, unique)
    sc.produce(400, seed=1)
    first = _ends(sc, sc.input)
    time.sleep(1.5)
    cut = time.time()
    time.sleep(1.5)
    sc.produce(200, seed=2)
    ends = _ends(sc, sc.input)
    at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(cut)) + f".{int(cut * 1000) % 1000:03d}Z"
    here = ("--state-dir", str(tmp_path / "state"))
    run = _reset(sc, "--to-datetime", at, "--json", *here)
    assert run.returncode == 0, run.stderr
    plan = orjson.loads(run.stdout)
    assert {m["partition"]: m["new"] for m in plan["moves"]} == first
    assert all(m["old"] is None for m in plan["moves"]), "no worker ever committed"
    assert _committed(sc) == {(sc.input, p): o for p, o in first.items()}

    assert _reset(sc, "--to-latest", *here).returncode == 0
    assert _committed(sc) == {(sc.input, p): o for p, o in ends.items()}
    later = _reset(sc, "--by-duration", "1h", "--json", *here)  # everything is newer than an hour
    assert {m["partition"]: m["new"] for m in orjson.loads(later.stdout)["moves"]} == {
        p: 0 for p in ends}
