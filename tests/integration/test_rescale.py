"""Rescaling restores on a real broker: application A processes the first part of the input and
stops, a savepoint is taken, the input topic changes its partition count, the savepoint is
restored into application B, and B processes the rest, written by murmur2 over the new count.

- 4 -> 8, the same topic grown (`kafka-topics --alter`): revenue per user behind a
  repartition topic; per user the running order count strictly increases across the cut and
  the final totals equal the oracle over all input.
- 8 -> 3, the topic deleted and re-created (same name, new topic id: read from its start):
  tumbling windows after a repartition, open at the cut; every window is emitted once, equal
  to the oracle, none late.
- Rescaling and a migration in two restores (one that does both is refused).
- Refusals: a rescaled source with unconsumed records at the savepoint; a store fed by a
  producer that did not partition by murmur2 of the key (the partitioner self-check).
"""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest
from confluent_kafka.admin import AdminClient, NewPartitions

from processor.examples.revenue import revenue_oracle
from processor.tools.generator import create_topic, produce_json
from tests.integration.kafka import WorkerProcess, latest_json_by_key, read_all, topology_file
from tests.integration.scenario import RevenueScenario
from tests.integration.test_event_time import (
    HOUR_MS,
    GmvScenario,
    _assert_matches,
    _flush_records,
    _jittered_orders,
    gmv_oracle,
)
from tests.integration.test_migrate import migrated_topology
from tests.integration.test_savepoint import _app_b, _cli, _create_when_stopped, _manifest, _ok, _refused

pytestmark = pytest.mark.integration

HALF = 3000
KILL_AT = "batch.processed:50"


def _admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


def _partitions(bootstrap: str, topic: str) -> int:
    md = _admin(bootstrap).list_topics(topic, timeout=10)
    return len(md.topics[topic].partitions)


def _grow(bootstrap: str, topic: str, partitions: int) -> None:
    """What `kafka-topics.sh --alter --topic T --partitions N` does."""
    admin = _admin(bootstrap)
    admin.create_partitions([NewPartitions(topic, partitions)])[topic].result()
    deadline = time.monotonic() + 30
    while _partitions(bootstrap, topic) != partitions:
        assert time.monotonic() < deadline, f"{topic} did not reach {partitions} partitions"
        time.sleep(0.2)


def _recreate(bootstrap: str, topic: str, partitions: int) -> None:
    admin = _admin(bootstrap)
    admin.delete_topics([topic], operation_timeout=30)[topic].result()
    deadline = time.monotonic() + 60
    while True:
        try:
            create_topic(bootstrap, topic, partitions)
            if _partitions(bootstrap, topic) == partitions:
                return
        except Exception:  # still being deleted
            pass
        assert time.monotonic() < deadline, f"{topic} could not be re-created"
        time.sleep(0.5)


def _processed(sc: RevenueScenario, timeout: float = 180) -> None:
    """Wait until A's outputs carry the oracle's totals of everything produced so far."""
    want = revenue_oracle(sc.produced)
    deadline = time.monotonic() + timeout
    while True:
        got = latest_json_by_key(sc.outputs())
        if {u: got.get(u, {}).get("orders") for u in want} == {u: v["orders"]
                                                               for u, v in want.items()}:
            return
        assert time.monotonic() < deadline, "A did not process the first half in time"
        time.sleep(1)


@pytest.mark.parametrize("stop", ["sigterm", "kill"])
def test_grow_input_from_4_to_8_partitions_with_state_behind_a_repartition(
        broker, tmp_path: Path, unique: str, stop: str) -> None:
    """`kill`: A dies (kill -9) once it has read all its input but not yet aggregated all of
    it: the repartition records in flight are re-partitioned over 8 by the restore."""
    broker.require_aborted_isolation("outputs without duplicates across the cut")
    sc = RevenueScenario(broker.bootstrap, tmp_path, unique)
    sc.produce(HALF, seed=1)
    if stop == "sigterm":
        a = sc.worker(idle=None)
        _processed(sc)
        assert a.terminate() == 0, a.log_text()[-4000:]  # SIGTERM: a final checkpoint, exit 0
    else:
        # batches of at most 100: 30 source batches, then their repartition records; the
        # source is drained first (its records are all there from the start)
        a = sc.worker(idle="6s", commit_interval="20ms",
                      env={"PROCESSOR_BATCH_SIZE": "100", "PROCESSOR_CRASH_AT": KILL_AT})
        assert a.wait(240) == -9, a.log_text()[-4000:]
    savepoint = tmp_path / "sp"
    _create_when_stopped(sc, savepoint)
    if stop == "kill":
        inflight = _manifest(savepoint)["inflight"][f"{sc.name}-totals-repartition"]
        assert sum(inflight["records"].values()) > 0, inflight
    source = _manifest(savepoint)["source_offsets"][sc.input]
    assert source["partitions"] == 4 and source["topic_id"]
    assert all(source["consumed_to_end"].values()), source
    assert sum(source["end_offsets"].values()) == HALF

    _grow(sc.bootstrap, sc.input, 8)
    b = _app_b(sc)
    done = _ok(_cli("savepoint", "restore", str(savepoint), str(b),
                    "--bootstrap-servers", sc.bootstrap))
    assert f"rescaled: source {sc.input} from 4 to 8 partitions" in done
    for topic in (f"{sc.name}-b-totals-changelog", f"{sc.name}-b-totals-repartition"):
        assert _partitions(sc.bootstrap, topic) == 8, topic
    sc.produce(HALF, seed=2)  # murmur2 over 8 partitions: the new ones get records too
    worker_b = WorkerProcess(b, sc.bootstrap, tmp_path / "state-b", tmp_path, idle="4s")
    assert worker_b.wait(240) == 0, worker_b.log_text()[-4000:]
    # the aggregate's 8 tasks restored their moved state; the totals cover the new partitions
    repartition = f"{sc.name}-b-totals-repartition"
    running = {e["partition"] for e in worker_b.find("task running") if e["topic"] == repartition}
    assert running == set(range(8)), running
    sc.assert_no_repeated_outputs()
    sc.assert_final_state_matches_oracle()


def test_shrink_input_from_8_to_3_partitions_with_windows_open_at_the_cut(
        broker, tmp_path: Path, unique: str) -> None:
    """The topic cannot shrink: it is deleted and re-created with 3 partitions under the same
    name (a new topic id: B reads it from its start). The topology's source keeps its name."""
    broker.require_aborted_isolation("that no window is emitted twice across the cut")
    sc = GmvScenario(broker.bootstrap, tmp_path, unique, "exactly_once")
    _recreate(sc.bootstrap, sc.input, 8)
    orders = _jittered_orders(8000, seed=3)
    first, second = orders[:4000], orders[4000:]
    produce_json(sc.bootstrap, sc.input, first)
    a = sc.worker(idle="5s", commit_interval="20ms", env={"PROCESSOR_BATCH_SIZE": "100"})
    assert a.wait(180) == 0, a.log_text()[-4000:]
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
    gmv = manifest["stores"]["gmv"]
    assert gmv["partitions"] == 8 and sum(gmv["entries"].values()) > 0  # windows open at the cut
    assert all("time" in r for r in gmv["position_records"].values())

    _recreate(sc.bootstrap, sc.input, 3)
    b = topology_file(tmp_path, "gmv_dashboard.yaml", f"gmv-{unique}-b", {
        "name: gmv-dashboard": f"name: gmv-{unique}-b",
        "topic: orders": f"topic: {sc.input}",
        "topic: gmv-per-second": f"topic: {sc.output}",
        "topic: gmv-late-orders": f"topic: {sc.late}",
    })
    done = _ok(_cli("savepoint", "restore", str(savepoint), str(b),
                    "--bootstrap-servers", sc.bootstrap))
    assert f"rescaled: source {sc.input} from 8 to 3 partitions" in done
    assert _partitions(sc.bootstrap, f"gmv-{unique}-b-gmv-changelog") == 3
    produce_json(sc.bootstrap, sc.input, second)
    produce_json(sc.bootstrap, sc.input,
                 _flush_records(3, max(o["ts"] for _, o in orders) + HOUR_MS))
    worker_b = WorkerProcess(b, sc.bootstrap, tmp_path / "state-b", tmp_path,
                             env={"PROCESSOR_BATCH_SIZE": "300"})
    assert worker_b.wait(240) == 0, worker_b.log_text()[-4000:]
    got, repeats = sc.results()
    _assert_matches(got, gmv_oracle(orders))
    assert repeats == 0, f"{repeats} windows emitted twice across the cut"
    assert read_all(broker.bootstrap, sc.late) == [], "no order is late in this input"


PER_KEY = """
name: {name}
sources:
  clicks: {{topic: {input}, key: {{format: string}}, value: {{format: json}}}}
pipelines:
  - from: clicks
    steps:
      - aggregate: {{store: counts, n: count()}}
      - to: {{topic: {output}, partitions: 1}}
"""


def test_rescaling_refuses_unconsumed_input_and_state_not_partitioned_by_murmur2(
        broker, tmp_path: Path, unique: str) -> None:
    # unconsumed input: records written after A stopped are still in the old partitions
    sc = RevenueScenario(broker.bootstrap, tmp_path, unique)
    sc.produce(300, seed=1)
    a = sc.worker(idle="4s")
    assert a.wait(180) == 0, a.log_text()[-4000:]
    sc.produce(50, seed=2)
    savepoint = tmp_path / "sp"
    _create_when_stopped(sc, savepoint)
    assert not all(_manifest(savepoint)["source_offsets"][sc.input]["consumed_to_end"].values())
    _grow(sc.bootstrap, sc.input, 8)
    b = _app_b(sc)
    _refused(_cli("savepoint", "restore", str(savepoint), str(b), "--bootstrap-servers",
                  sc.bootstrap), "had unconsumed records at the savepoint")
    assert f"{sc.name}-b-totals-changelog" not in _admin(sc.bootstrap).list_topics(
        timeout=10).topics, "a refused restore creates nothing"

    # a store fed straight by a source whose producer picked partitions itself
    topic, name = f"clicks-{unique}", f"clicks-{unique}"
    create_topic(broker.bootstrap, topic, 4)
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(PER_KEY.format(name=name, input=topic, output=f"counts-{unique}"))
    produce_json(broker.bootstrap, topic, [(f"user-{i}", {"i": i}, i % 4) for i in range(40)])
    worker = WorkerProcess(spec, broker.bootstrap, tmp_path / "state-c", tmp_path, idle="4s")
    assert worker.wait(180) == 0, worker.log_text()[-4000:]
    counts = tmp_path / "sp-counts"
    run = _cli("savepoint", "create", str(spec), "--to", str(counts),
               "--bootstrap-servers", broker.bootstrap)
    _ok(run)
    assert sum(_manifest(counts)["stores"]["counts"]["entries"].values()) == 40
    _grow(broker.bootstrap, topic, 8)
    spec_b = tmp_path / f"{name}-b.yaml"
    spec_b.write_text(PER_KEY.format(name=f"{name}-b", input=topic, output=f"counts-{unique}"))
    run = _cli("savepoint", "restore", str(counts), str(spec_b), "--bootstrap-servers",
               broker.bootstrap)
    _refused(run, "which Kafka's default partitioner (murmur2 of the key bytes over 4 "
                  "partitions) puts in partition")
    assert "store 'counts' (operator aggregate)" in run.stderr
    # nothing written: B has no committed offsets and its changelog holds nothing
    assert read_all(broker.bootstrap, f"{name}-b-counts-changelog", committed=False) == []
    assert orjson.loads((counts / "manifest.json").read_bytes())["application"] == name


def test_rescale_then_migrate_in_two_restores(broker, tmp_path: Path, unique: str) -> None:
    """One restore does not rescale and migrate at once (refused, nothing written); two do:
    the savepoint rescaled into an intermediate application C with the old topology, C's
    savepoint taken without running it, then restored with the migration (two fields appended,
    the store renamed) into D, which processes the rest: nothing twice, nothing skipped, the
    appended fields cover what came after the cut."""
    broker.require_aborted_isolation("outputs without duplicates across the cut")
    sc = RevenueScenario(broker.bootstrap, tmp_path, unique)
    sc.produce(HALF, seed=1)
    a = sc.worker(idle="5s")
    assert a.wait(240) == 0, a.log_text()[-4000:]
    first_half = list(sc.produced)
    first = tmp_path / "sp"
    _create_when_stopped(sc, first)
    _grow(sc.bootstrap, sc.input, 8)

    d = migrated_topology(sc)  # application <name>-b: fields appended, store renamed
    run = _cli("savepoint", "restore", str(first), str(d), "--rename-store", "totals=user_totals",
               "--bootstrap-servers", sc.bootstrap)
    _refused(run, "would rescale and migrate state at once")
    assert f"{sc.name}-b-user_totals-changelog" not in _admin(sc.bootstrap).list_topics(
        timeout=10).topics, "a refused restore creates nothing"

    c = topology_file(tmp_path, "revenue_per_user.yaml", f"{sc.name}-c", {
        "name: revenue-per-user": f"name: {sc.name}-c",
        "topic: orders": f"topic: {sc.input}",
        "topic: revenue-per-user": f"topic: {sc.output}",
    })
    assert "rescaled" in _ok(_cli("savepoint", "restore", str(first), str(c),
                                  "--bootstrap-servers", sc.bootstrap))
    second = tmp_path / "sp-c"
    _ok(_cli("savepoint", "create", str(c), "--to", str(second),
             "--bootstrap-servers", sc.bootstrap))
    assert _manifest(second)["stores"]["totals"]["partitions"] == 8
    done = _ok(_cli("savepoint", "restore", str(second), str(d), "--rename-store",
                    "totals=user_totals", "--bootstrap-servers", sc.bootstrap))
    assert "field 'orders_after' (count) appended" in done, done

    sc.produce(HALF, seed=2)
    second_half = sc.produced[len(first_half):]
    worker_d = WorkerProcess(d, sc.bootstrap, tmp_path / "state-d", tmp_path, idle="5s")
    assert worker_d.wait(240) == 0, worker_d.log_text()[-4000:]
    sc.assert_no_repeated_outputs()
    sc.assert_final_state_matches_oracle()
    after = revenue_oracle(second_half)
    final = latest_json_by_key(sc.outputs())
    for user, want in after.items():
        assert final[user]["orders_after"] == want["orders"], (user, final[user], want)
