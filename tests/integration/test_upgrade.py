"""A changed topology on existing state, on a real broker: the worker records each store's layout
in its changelog; a worker whose topology would misread that state (an aggregate field's
function changed) exits 2 with the reasons `upgrade-check` gives and writes no output; a
compatible change (a filter rewritten) runs on the same state, and the final totals equal the
oracle over every record produced, before and after the refused run."""

from __future__ import annotations

import subprocess
import sys

import orjson

from processor.state import LAYOUT_KEY
from tests.integration.kafka import ROOT, WorkerProcess, read_all, topology_file
from tests.integration.scenario import RevenueScenario

FILTER = "value['amount'] > 0 and value['status'] != 'cancelled'"


def _variant(scenario: RevenueScenario, name: str, old: str, new: str):
    return topology_file(scenario.tmp, "revenue_per_user.yaml", name, {
        "name: revenue-per-user": f"name: {scenario.name}",
        "topic: orders": f"topic: {scenario.input}",
        "topic: revenue-per-user": f"topic: {scenario.output}",
        old: new,
    })


def _worker(scenario: RevenueScenario, topology) -> WorkerProcess:
    """A worker of another version of the topology on the first worker's state directory."""
    return WorkerProcess(topology, scenario.bootstrap, scenario.tmp / "state-a", scenario.tmp)


def _upgrade_check(old, new) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "processor", "upgrade-check", str(old), str(new)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_incompatible_change_is_refused_and_a_compatible_one_runs(broker, tmp_path, unique):
    scenario = RevenueScenario(broker.bootstrap, tmp_path, unique)
    scenario.produce(1500)
    first = scenario.worker()
    assert first.wait(180) == 0, first.log_text()
    scenario.assert_final_state_matches_oracle()
    changelog = read_all(broker.bootstrap, f"{scenario.name}-totals-changelog")
    layouts = [orjson.loads(v) for k, v, _ in changelog if k == LAYOUT_KEY]
    assert layouts, "no layout record in the changelog"
    assert {(r["store"], r["operator"]) for r in layouts} == {("totals", "aggregate")}
    assert [f["name"] for f in layouts[0]["fields"]] == [
        "orders", "revenue", "avg_order", "largest", "last_country"]

    scenario.produce(500, seed=2)  # waits for whichever worker runs next
    outputs_before = len(scenario.outputs())
    changed = _variant(scenario, "avg", "revenue: sum(value['amount'])",
                       "revenue: avg(value['amount'])")
    check = _upgrade_check(scenario.topology, changed)
    assert check.returncode == 4, check.stdout + check.stderr
    reason = "store totals: field 'revenue': function sum -> avg"
    assert reason in check.stdout
    refused = _worker(scenario, changed)
    assert refused.wait(180) == 2, refused.log_text()
    errors = [line for line in refused.log_text().splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, refused.log_text()
    assert "state of store totals (partition" in errors[0] and "incompatible" in errors[0]
    assert reason in errors[0]
    assert "Traceback" not in refused.log_text()
    assert len(scenario.outputs()) == outputs_before  # nothing written

    rewritten = _variant(scenario, "filter", FILTER,
                         "value['status'] != 'cancelled' and value['amount'] > 0")
    check = _upgrade_check(scenario.topology, rewritten)
    assert check.returncode == 0 and check.stdout.startswith("compatible"), check.stdout
    runs = _worker(scenario, rewritten)
    assert runs.wait(180) == 0, runs.log_text()
    scenario.assert_final_state_matches_oracle()  # all 2000 records, none lost or repeated
    scenario.assert_no_repeated_outputs()
