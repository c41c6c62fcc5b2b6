"""Savepoint migrations on a real broker (revenue per user: a repartition topic, a changelogged
aggregate).

- Added fields and a renamed store: application A processes the first half and stops; its
  savepoint is restored into application B, whose aggregate has two fields more (`count()`
  and `max(amount)`) and whose store is renamed. Without `--rename-store` the restore is
  refused naming the likely rename; with it, B processes the second half: per user the order
  counts strictly increase across the cut (nothing twice), the old fields equal the oracle over
  all the input (nothing skipped) and the added ones the oracle over the second half (they
  aggregate the records after the restore, as documented).
- `reset --to-savepoint`: A is killed mid-input (records in flight in its repartition topic),
  a savepoint is taken, A then processes everything; the reset puts A back at the savepoint
  (`--dry-run` first: both plans, nothing changed) and the rerun resumes from the savepoint's
  state: per user its first count continues the savepoint's, its counts strictly increase, and
  its final results equal the uncut run's: counts and maxima exactly, sums to the cent, and
  `last(country)` one of the user's countries. The last two depend on the order in which the
  input partitions' records meet in the repartition topic, which differs between any two runs
  (as in Kafka Streams); exactly-once does not fix that order.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pytest

from processor.examples.revenue import revenue_oracle
from tests.integration.kafka import (
    WorkerProcess,
    assert_revenue_matches,
    latest_json_by_key,
    topology_file,
)
from tests.integration.scenario import RevenueScenario
from tests.integration.test_reset import _committed
from tests.integration.test_savepoint import (
    HALF,
    _cli,
    _create_when_stopped,
    _ok,
    _refused,
    kill_with_records_in_flight,
)

pytestmark = pytest.mark.integration


def migrated_topology(sc: RevenueScenario) -> Path:
    """revenue_per_user with two fields appended and its store renamed, as a new application."""
    return topology_file(sc.tmp, "revenue_per_user.yaml", f"{sc.name}-b", {
        "name: revenue-per-user": f"name: {sc.name}-b",
        "topic: orders": f"topic: {sc.input}",
        "topic: revenue-per-user": f"topic: {sc.output}",
        "store: totals": "store: user_totals",
        "          last_country: last(value['country'])\n":
            "          last_country: last(value['country'])\n"
            "          orders_after: count()\n"
            "          largest_after: max(value['amount'])\n",
        "            country: value['last_country']\n":
            "            country: value['last_country']\n"
            "            orders_after: value['orders_after']\n"
            "            largest_after: value['largest_after']\n",
    })


def test_restore_appends_fields_and_renames_a_store(broker, tmp_path: Path, unique: str) -> None:
    broker.require_aborted_isolation("outputs without duplicates across the cut")
    sc = RevenueScenario(broker.bootstrap, tmp_path, unique)
    sc.produce(HALF, seed=1)
    worker_a = sc.worker(idle="5s")
    assert worker_a.wait(240) == 0, worker_a.log_text()[-4000:]
    first_half = list(sc.produced)
    savepoint = tmp_path / "sp"
    _create_when_stopped(sc, savepoint)

    b = migrated_topology(sc)
    check = _cli("upgrade-check", str(sc.topology), str(b))
    assert check.returncode == 3, check.stdout
    assert "--to-savepoint DIR" in check.stdout and "--rename-store OLD=NEW" in check.stdout
    _refused(_cli("savepoint", "restore", str(savepoint), str(b), "--bootstrap-servers",
                  sc.bootstrap), "--rename-store totals=user_totals")
    done = _ok(_cli("savepoint", "restore", str(savepoint), str(b), "--rename-store",
                    "totals=user_totals", "--bootstrap-servers", sc.bootstrap))
    users = len(revenue_oracle(first_half))
    assert (f"store user_totals: from savepoint store totals; {users} entries rewritten: field "
            "'orders_after' (count) appended at its initial value, field 'largest_after' (max) "
            "appended at its initial value") in done, done
    assert f"into application '{sc.name}-b'" in done

    sc.produce(HALF, seed=2)
    second_half = sc.produced[len(first_half):]
    worker_b = WorkerProcess(b, sc.bootstrap, tmp_path / "state-b", tmp_path, idle="5s")
    assert worker_b.wait(240) == 0, worker_b.log_text()[-4000:]
    sc.assert_no_repeated_outputs()
    sc.assert_final_state_matches_oracle()
    final = latest_json_by_key(sc.outputs())
    after = revenue_oracle(second_half)
    assert after
    for user, got in final.items():
        if user in after:  # its latest result is B's
            assert (got["orders_after"], got["largest_after"]) == (
                after[user]["orders"], after[user]["largest"]), (user, got, after[user])
        else:  # no order after the cut: its latest result is still A's
            assert "orders_after" not in got


def _saved_counts(savepoint: Path) -> dict[str, int]:
    """Per user, the order count the savepoint holds (the accumulator's first slot)."""
    out = {}
    for path in (savepoint / "stores" / "totals").glob("*.jsonl"):
        for raw in path.read_bytes().splitlines():
            line = orjson.loads(raw)
            out[line.get("key_text", line.get("key"))] = line["value"][0]
    return out


def test_reset_to_savepoint_then_rerun_equals_the_uncut_run(broker, tmp_path: Path,
                                                            unique: str) -> None:
    broker.require_aborted_isolation("outputs without duplicates within the rerun")
    sc = RevenueScenario(broker.bootstrap, tmp_path, unique)
    savepoint = tmp_path / "sp"
    kill_with_records_in_flight(sc, savepoint)  # records in flight downstream
    saved = _saved_counts(savepoint)

    sc.produce(HALF, seed=2)  # the uncut run: A goes on to the end
    worker_a = sc.worker(idle="5s")
    assert worker_a.wait(240) == 0, worker_a.log_text()[-4000:]
    sc.assert_no_repeated_outputs()
    sc.assert_final_state_matches_oracle()
    uncut = latest_json_by_key(sc.outputs())
    committed = _committed(sc)

    reset = [str(sc.topology), "--to-savepoint", str(savepoint), "--bootstrap-servers",
             sc.bootstrap, "--state-dir", str(tmp_path / "state-a")]
    dry = _ok(_cli("reset", *reset, "--dry-run"))
    assert f"dry run, nothing changed: reset of '{sc.name}'" in dry
    assert f"to the offsets of savepoint {savepoint}" in dry
    assert "input offsets the restore commits:" in dry
    assert f"then restore savepoint {savepoint} into '{sc.name}':" in dry
    assert f"  store totals: {len(saved)} entries in 4 partition(s)" in dry
    assert _committed(sc) == committed, "a dry run changes nothing"

    done = _ok(_cli("reset", *reset))
    assert f"consumer group {sc.name}: deleted" in done and "restored: " in done
    before = Counter(k for k, _, _ in sc.outputs())
    worker = sc.worker(idle="5s")
    assert worker.wait(240) == 0, worker.log_text()[-4000:]
    rerun: dict[str, list[int]] = {}
    seen: Counter[bytes | None] = Counter()
    for key, value, _ in sc.outputs():
        seen[key] += 1
        if seen[key] > before[key]:
            rerun.setdefault(key.decode(), []).append(orjson.loads(value)["orders"])
    assert rerun, "the rerun emitted nothing"
    for user, counts in rerun.items():
        assert counts == sorted(set(counts)), (user, counts)  # strictly increasing
        assert counts[0] > saved.get(user, 0), (user, counts[0], saved.get(user))
    final = latest_json_by_key(sc.outputs())
    assert_revenue_matches(final, uncut)
    countries: dict[str, set[str]] = {}
    for _, order in sc.produced:
        countries.setdefault(order["user"], set()).add(order["country"])
    odd = [(u, got["country"]) for u, got in final.items() if got["country"] not in countries[u]]
    assert not odd, f"a last(country) the user never ordered from: {odd[:5]}"
