"""kill -9 at chosen points (PROCESSOR_CRASH_AT sends SIGKILL to the worker itself), restart,
and compare with the oracle.

State must equal the oracle under both guarantees: the changelog position records and the
repartition envelopes make state exactly-once even when outputs repeat. Output
duplicate-freedom is the exactly-once promise proper and needs a broker that hides aborted
transactions.
"""

from __future__ import annotations

import pytest

from tests.integration.scenario import RevenueScenario

pytestmark = pytest.mark.integration

CRASH_POINTS = [
    "batch.processed:6",             # between checkpoints
    "checkpoint.after_flush:4",      # outputs produced, changelog not yet
    "checkpoint.after_changelog:4",  # changelog produced, nothing committed
    "checkpoint.before_commit:4",    # offsets sent / outputs flushed, commit not done
    "checkpoint.after_commit:4",     # committed, local RocksDB not yet written
]
SMALL_BATCHES = {"PROCESSOR_BATCH_SIZE": "300"}


def _crash_then_finish(sc: RevenueScenario, point: str) -> None:
    # short checkpoints so every crash point is reached several times before input runs out;
    # a worker that never reaches its point goes idle and exits 0, failing the assertion
    crashed = sc.worker(idle="5s", commit_interval="20ms",
                        env={**SMALL_BATCHES, "PROCESSOR_CRASH_AT": point})
    rc = crashed.wait(120)
    assert rc == -9, f"worker should have been killed at {point}, exit {rc}:\n{crashed.log_text()}"
    done = sc.worker(env=SMALL_BATCHES)
    assert done.wait(180) == 0, done.log_text()


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
@pytest.mark.parametrize("point", CRASH_POINTS)
def test_state_equals_oracle_after_kill(broker, tmp_path, unique, guarantee, point):
    sc = RevenueScenario(broker.bootstrap, tmp_path, unique, guarantee)
    sc.produce(12_000)
    _crash_then_finish(sc, point)
    sc.assert_final_state_matches_oracle()


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_kill_during_restore_then_resume(broker, tmp_path, unique, guarantee):
    sc = RevenueScenario(broker.bootstrap, tmp_path, unique, guarantee)
    sc.produce(8_000, seed=1)
    first = sc.worker(state="old")
    assert first.wait() == 0, first.log_text()
    sc.produce(4_000, seed=2)
    # a new machine: empty state dir, restore from the changelog in small chunks, killed midway
    env = {"PROCESSOR_RESTORE_BATCH_SIZE": "40", "PROCESSOR_CRASH_AT": "restore.chunk:3"}
    crashed = sc.worker(state="new", idle="5s", env=env)
    assert crashed.wait(120) == -9, crashed.log_text()
    assert any(r.get("msg") == "restore started" for r in crashed.logs())
    resumed = sc.worker(state="new", env={"PROCESSOR_RESTORE_BATCH_SIZE": "40"})
    assert resumed.wait(180) == 0, resumed.log_text()
    restored = sum(r["records"] for r in resumed.logs() if r.get("msg") == "store restored")
    assert restored > 0, "the resumed worker should finish the interrupted restore"
    sc.assert_final_state_matches_oracle()


@pytest.mark.parametrize("point", ["checkpoint.after_changelog:4", "checkpoint.before_commit:4"])
def test_exactly_once_outputs_have_no_duplicates_after_kill(broker, tmp_path, unique, point):
    broker.require_aborted_isolation("that no output repeats after kill -9")
    sc = RevenueScenario(broker.bootstrap, tmp_path, unique, "exactly_once")
    sc.produce(12_000)
    _crash_then_finish(sc, point)
    sc.assert_final_state_matches_oracle()
    sc.assert_no_repeated_outputs()
