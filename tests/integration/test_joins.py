"""Joins on the real broker, against brute-force oracles: stream-table (per-task and global
tables), interval joins (inner, left, outer), reconcile of 2 and 3 streams with branch; kill -9
mid-join and restarts (same state dir, then another machine); broadcast rules changing under a
running worker and surviving a restart; co-partitioning checked at run time.

Input and oracles: tests/integration/joins_scenario.py (why the oracles are exact although two
topics interleave arbitrarily at the join task is explained there).
"""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from processor.tools.generator import create_topic, produce_json
from tests.integration import joins_scenario as js
from tests.integration.kafka import ROOT, WorkerProcess, read_all

pytestmark = pytest.mark.integration

ALL_PIPELINES = ["table_inner", "table_left", "global_inner", "interval_inner", "interval_left",
                 "interval_outer", "reconcile2", "reconcile3"]


def _stream_topics(unique: str, roles: list[str]) -> dict[str, str]:
    return {role: f"j-{role}-{unique}" for role in roles}


def _write(tmp: Path, name: str, text: str) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(text)
    return path


# the worker's log lines when it drops uncommitted work (an aborted transaction)
ABORTS = ("checkpoint failed; closing tasks dirty and reopening them",
          "partitions lost; closing tasks dirty")


def _results(bootstrap: str, outs: dict[str, str]) -> dict[str, js.Out]:
    return {p: js.outputs(bootstrap, topic) for p, topic in outs.items()}


def test_every_join_kind_equals_its_oracle_with_out_of_order_input(broker, tmp_path, unique):
    """One topology, eight pipelines over orders (3 partitions), payments (2), shipments (4):
    stream-table inner / left (per-task table, co-partitioned with orders; rows updated,
    deleted, re-created) plus a global-table lookup by expression; interval joins inner, left,
    outer; reconcile of 2 streams, and of 3 with a branch to two sinks. Input out of order
    within max_out_of_orderness in every partition; sentinels close every interval and group.
    One clean exactly-once run: exact multisets on any broker."""
    topics = _stream_topics(unique, ["orders", "payments", "shipments", "customers", "countries"])
    outs = js.output_topics(unique, ALL_PIPELINES)
    topology = _write(tmp_path, "joins", js.topology_yaml(f"joins-{unique}", topics, outs,
                                                          ALL_PIPELINES))
    js.create_topics(broker.bootstrap, topics)
    data = js.generate(3_000, seed=7)
    js.produce(broker.bootstrap, topics, data)
    want = js.oracles(data, ALL_PIPELINES)
    # the scenario exercises what it claims to
    statuses = {p: {orjson.loads(v)["status"] for _, v in want[p]}
                for p in ("reconcile2", "reconcile3_other")}
    assert statuses["reconcile2"] == {"matched", "mismatched", "incomplete"}
    assert statuses["reconcile3_other"] == {"mismatched", "incomplete"}

    started = time.monotonic()
    w = WorkerProcess(topology, broker.bootstrap, tmp_path / "state", tmp_path)
    assert w.wait(180) == 0, w.log_text()
    elapsed = time.monotonic() - started
    got = _results(broker.bootstrap, outs)
    # one clean run: every transaction committed, none aborted, so the multisets are exact on
    # any broker (the embedded one included)
    problems = [d for d in (js.diff(got[p], want[p], p) for p in outs) if d]
    assert not problems, "\n".join(problems) + f"\n(run took {elapsed:.1f}s)"
    aborted = [r for r in w.logs() if r.get("msg") in ABORTS]
    assert not aborted, f"the clean run aborted a transaction: {aborted[:2]}"


CRASH_PIPELINES = ["interval_outer", "reconcile3"]


def _written(bootstrap: str, topic: str) -> int:
    """Records in `topic`, committed or not (end offsets would count transaction markers, and
    the embedded broker's can be stale)."""
    return len(read_all(bootstrap, topic, committed=False))


def test_kill_mid_join_restart_then_another_machine_give_the_oracle(broker, tmp_path, unique):
    """An outer interval join and a 3-way reconcile with branch, exactly-once, ~25,000 input
    records arriving interleaved while the worker runs. kill -9 in the middle of a transaction
    (outputs and changelog written, nothing committed) with both joins half-way (stored
    records, open groups, timers); restart on the same state dir and drain the input (no
    sentinels yet, so the last intervals and groups stay open in the state); then the
    sentinels, processed by a worker on an EMPTY state dir with the same worker id (another
    machine): the open records, groups and timers must come back from the changelog and
    close as the oracle says."""
    topics = _stream_topics(unique, ["orders", "payments", "shipments"])
    outs = js.output_topics(unique, CRASH_PIPELINES)
    topology = _write(tmp_path, "crash", js.topology_yaml(f"jcrash-{unique}", topics, outs,
                                                          CRASH_PIPELINES))
    js.create_topics(broker.bootstrap, topics)
    data = js.generate(9_000, seed=11)
    want = js.oracles(data, CRASH_PIPELINES)
    worker_id = f"jcrash-{unique}"  # kept across machines (a StatefulSet pod name)

    def worker(state: str, **kwargs: Any) -> WorkerProcess:
        return WorkerProcess(topology, broker.bootstrap, tmp_path / state, tmp_path,
                             worker_id=worker_id, **kwargs)

    # ~24 checkpoints of 150 ms happen while the input arrives for 3.6 s: the 12th comes early enough
    # (a worker that never gets there goes idle and exits 0, failing the test); killed just
    # before its commit, with ~150 ms of outputs sent (no linger) in the transaction to abort
    first = worker("state-a", idle="5s", commit_interval="150ms",
                   env={"PROCESSOR_BATCH_SIZE": "300", "PROCESSOR_PRODUCER": '{"linger.ms": 0}',
                        "PROCESSOR_CRASH_AT": "checkpoint.before_commit:12"})
    first.wait_for_log("partitions assigned")
    js.produce_interleaved(broker.bootstrap, topics, data, rate_per_s=7_000)
    assert first.wait(120) == -9, f"not killed mid-transaction:\n{first.log_text()}"
    written = {p: _written(broker.bootstrap, t) for p, t in outs.items()}
    assert written["interval_outer"] > 0 and written["reconcile3"] > 0, (
        f"both joins should have written output before the kill: {written}")
    assert written["interval_outer"] < 0.8 * sum(want["interval_outer"].values()), (
        f"the kill should come mid-way: {written}")

    second = worker("state-a")
    assert second.wait(180) == 0, second.log_text()
    drained = _results(broker.bootstrap, outs)
    problems = [f"{p}: {sorted(js.distinct(drained[p]) - js.distinct(want[p]))[:3]}"
                for p in outs if not js.distinct(drained[p]) <= js.distinct(want[p])]
    assert not problems, f"outputs the oracle does not have (before the sentinels): {problems}"
    still_open = sum(len(js.distinct(want[p]) - js.distinct(drained[p])) for p in outs)
    assert still_open > 0, "the scenario should leave intervals and groups open for the move"

    js.produce_sentinels(broker.bootstrap, topics, data)
    third = worker("state-b")
    assert third.wait(180) == 0, third.log_text()
    restored = sum(r["records"] for r in third.logs() if r.get("msg") == "store restored")
    assert restored > 0, "the empty state dir should be restored from the changelog"

    got = _results(broker.bootstrap, outs)
    problems = [d for d in (js.diff(Counter(js.distinct(got[p])), Counter(js.distinct(want[p])),
                                    f"{p} (distinct records)") for p in outs) if d]
    assert not problems, "\n".join(problems)
    broker.require_aborted_isolation("that no join output repeats after kill -9 "
                                     "(the distinct records were checked above)")
    problems = [d for d in (js.diff(got[p], want[p], f"{p} (with repeats)") for p in outs) if d]
    assert not problems, "exactly-once output repeated or lost records after kill -9:\n" \
        + "\n".join(problems)


BROADCAST_TOPOLOGY = """
name: {name}
sources:
  tx: {{topic: {tx}}}
  rules: {{topic: {rules}, kind: broadcast}}
pipelines:
  - from: tx
    steps:
      - map: >-
          dict(value, rule=broadcast['rules']['limit']['version'],
               flagged=value['amount'] > broadcast['rules']['limit']['max'])
      - to: {{topic: {out}, partitions: 2}}
"""


def _produce_raw(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for key, value in records:
        p.produce(topic, value, key)
    assert p.flush(30) == 0


def _batch(prefix: str, n: int, seed: int) -> list[tuple[str, dict[str, Any]]]:
    rng = random.Random(seed)
    return [(f"{prefix}{i}", {"id": f"{prefix}{i}", "amount": rng.randrange(0, 200)})
            for i in range(n)]


def _wait_outputs(bootstrap: str, topic: str, ids: set[str], w: WorkerProcess,
                  timeout: float = 60) -> dict[str, list[dict[str, Any]]]:
    """Every output by id, once every id of `ids` has one."""
    deadline = time.monotonic() + timeout
    while True:
        by_id: dict[str, list[dict[str, Any]]] = {}
        for _, v, _ in read_all(bootstrap, topic):
            value = orjson.loads(v)
            by_id.setdefault(value["id"], []).append(value)
        if ids <= by_id.keys():
            return by_id
        assert w.proc.poll() is None, f"worker exited ({w.proc.returncode}):\n{w.log_text()}"
        assert time.monotonic() < deadline, (
            f"{len(ids - by_id.keys())} of {len(ids)} outputs missing after {timeout}s:\n"
            + w.log_text())
        time.sleep(0.3)


def _broadcast_versions(w: WorkerProcess) -> list[int]:
    return [r["version"] for r in w.logs()
            if r.get("msg") == "broadcast state updated" and r.get("source") == "rules"]


def _wait_broadcast_update(w: WorkerProcess, after: int, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while not (versions := [v for v in _broadcast_versions(w) if v > after]):
        assert w.proc.poll() is None, f"worker exited ({w.proc.returncode}):\n{w.log_text()}"
        assert time.monotonic() < deadline, (
            f"no broadcast update past version {after}:\n{w.log_text()}")
        time.sleep(0.1)
    return max(versions)


def _assert_evaluated(by_id: dict[str, list[dict[str, Any]]],
                      batch: list[tuple[str, dict[str, Any]]], rule: int, limit: int,
                      what: str) -> None:
    wrong = [(k, by_id.get(k)) for k, v in batch
             if by_id.get(k) != [{**v, "rule": rule, "flagged": v["amount"] > limit}]]
    assert not wrong, (f"{what}: {len(wrong)} of {len(batch)} records not evaluated exactly "
                       f"once with rule v{rule} (limit {limit}), e.g. {wrong[:3]}")


def test_broadcast_rule_change_applies_to_later_records_and_survives_restart(
        broker, tmp_path, unique):
    """Rule v1, batch A; an undecodable rule (skipped, worker keeps v1); rule v2, batch B;
    SIGTERM, restart on the same state dir, batch C; and a new deployment on an empty state
    dir. Each record is evaluated exactly once, with the rule applied before it arrived."""
    tx, rules, out = f"bc-tx-{unique}", f"bc-rules-{unique}", f"bc-out-{unique}"
    create_topic(broker.bootstrap, tx, 2)
    create_topic(broker.bootstrap, rules, 1)
    topology = _write(tmp_path, "bc", BROADCAST_TOPOLOGY.format(
        name=f"bc-{unique}", tx=tx, rules=rules, out=out))
    state = tmp_path / "state-a"

    def rule(version: int, limit: int) -> tuple[str, dict[str, Any]]:
        return "limit", {"max": limit, "version": version}

    produce_json(broker.bootstrap, rules, [rule(1, 100)])
    w1 = WorkerProcess(topology, broker.bootstrap, state, tmp_path, idle=None)
    a = _batch("a", 40, seed=1)
    produce_json(broker.bootstrap, tx, a)
    _assert_evaluated(_wait_outputs(broker.bootstrap, out, {k for k, _ in a}, w1), a, 1, 100,
                      "batch A, before the change")
    # a rule that does not decode is skipped: the worker keeps running with the rules it had
    seen = max(_broadcast_versions(w1), default=0)
    _produce_raw(broker.bootstrap, rules, [(b"limit", b"{not json")])
    seen = _wait_broadcast_update(w1, seen)
    w1.wait_for_log("broadcast record skipped: it does not decode")
    a2 = _batch("b", 20, seed=2)
    produce_json(broker.bootstrap, tx, a2)
    _assert_evaluated(_wait_outputs(broker.bootstrap, out, {k for k, _ in a2}, w1), a2, 1, 100,
                      "after an undecodable rule")
    # rule v2: every record produced after the worker applied it is evaluated with it
    produce_json(broker.bootstrap, rules, [rule(2, 50)])
    _wait_broadcast_update(w1, seen)
    b = _batch("c", 40, seed=3)
    produce_json(broker.bootstrap, tx, b)
    _assert_evaluated(_wait_outputs(broker.bootstrap, out, {k for k, _ in b}, w1), b, 2, 50,
                      "batch B, after the change")
    assert w1.terminate() == 0, w1.log_text()

    # the same machine restarted (rules from its local store), and at once a new deployment
    # on an empty state dir (another group: it reads every transaction from the start and
    # must have read the rules before its first record)
    w2 = WorkerProcess(topology, broker.bootstrap, state, tmp_path, idle=None)
    out3 = f"bc-out-fresh-{unique}"
    fresh = _write(tmp_path, "bc-fresh", BROADCAST_TOPOLOGY.format(
        name=f"bc-fresh-{unique}", tx=tx, rules=rules, out=out3))
    w3 = WorkerProcess(fresh, broker.bootstrap, tmp_path / "state-fresh", tmp_path, idle=None)
    c = _batch("d", 40, seed=4)
    produce_json(broker.bootstrap, tx, c)
    everything = a + a2 + b + c
    by_id = _wait_outputs(broker.bootstrap, out, {k for k, _ in everything}, w2)
    _assert_evaluated(by_id, c, 2, 50, "batch C, after a restart")
    # SIGTERM committed everything: nothing is processed twice (nothing aborted: exact here)
    _assert_evaluated(by_id, a + a2, 1, 100, "batches A (once, across the restart)")
    _assert_evaluated(by_id, b, 2, 50, "batch B (once, across the restart)")
    _assert_evaluated(_wait_outputs(broker.bootstrap, out3, {k for k, _ in everything}, w3),
                      everything, 2, 50, "a fresh state dir")
    assert w2.terminate() == 0, w2.log_text()
    assert w3.terminate() == 0, w3.log_text()


COPARTITION_TOPOLOGY = """
name: {name}
sources:
  orders: {{topic: {orders}}}
  customers: {{topic: {customers}, kind: table}}
pipelines:
  - from: orders
    steps:
      - join: {{table: customers, type: left}}
      - to: {{topic: {out}, partitions: 1}}
"""


def test_table_join_of_topics_with_different_partition_counts_exits_2(broker, tmp_path, unique):
    orders, customers = f"cp-orders-{unique}", f"cp-customers-{unique}"
    create_topic(broker.bootstrap, orders, 4)
    create_topic(broker.bootstrap, customers, 2)
    topology = _write(tmp_path, "cp", COPARTITION_TOPOLOGY.format(
        name=f"cp-{unique}", orders=orders, customers=customers, out=f"cp-out-{unique}"))
    proc = subprocess.run(
        [sys.executable, "-m", "processor", "run", str(topology), "--bootstrap-servers",
         broker.bootstrap, "--state-dir", str(tmp_path / "state"), "--stop-when-idle", "2s"],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "needs co-partitioned topics" in proc.stderr, proc.stderr[-2000:]
    assert orders in proc.stderr and customers in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
