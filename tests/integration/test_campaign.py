"""A short seeded fault campaign (tests/integration/campaign.py): repartition, windows and an
interval join under continuous input while workers are killed, paused, added and removed and
the broker itself is killed and restarted. The long campaigns behind the README's figures run
with scripts/fault_campaign.py.

Both guarantees face every fault kind. exactly_once fences a zombie (a worker stopped past
its session timeout, or whose loop stood still in a flush through a broker restart) with its
transaction; at_least_once has no transaction, so a checkpoint after the loop stood still longer
than the group tolerates writes no changelog (Worker._membership_doubt): before that guard the
campaign found such zombies' stale changelog writes landing after the next owner's restore.
"""

from __future__ import annotations

import json

import pytest

from tests.integration.campaign import CampaignConfig, run_campaign

pytestmark = [pytest.mark.integration, pytest.mark.campaign]

CASES = {
    "exactly_once": CampaignConfig(faults=10, seed=11, guarantee="exactly_once"),
    "at_least_once": CampaignConfig(faults=10, seed=12, guarantee="at_least_once"),
}


def _summary(report: dict) -> str:
    keep = ("guarantee", "seed", "faults", "records_in", "records_out", "lost", "duplicated",
            "final_state", "input", "drain")
    text = json.dumps({k: report[k] for k in keep}, indent=1)
    for e in report["unexpected_exits"]:
        text += f"\n{e['what']} {e['worker']} exit {e.get('exit')}:\n" + "\n".join(e["tail"])
    return text


@pytest.mark.timeout(600)
@pytest.mark.parametrize("guarantee", list(CASES))
def test_short_fault_campaign_loses_nothing(tmp_path, guarantee):
    cfg = CASES[guarantee]
    report = run_campaign(cfg, tmp_path)
    why = _summary(report)
    assert set(report["faults"]) == set(cfg.kinds), f"every fault kind should be hit:\n{why}"
    assert report["input"]["sent"] == report["input"]["in_topics"] and not report["input"][
        "errors"], f"the input itself is incomplete:\n{why}"
    assert not report["unexpected_exits"], f"a worker did not exit 0 when told to:\n{why}"
    assert report["lost"]["total"] == 0, f"records lost:\n{why}"
    assert report["final_state"]["ok"], f"final state differs from the oracle:\n{why}"
    if guarantee == "exactly_once":
        assert report["duplicated"]["total"] == 0, f"duplicates under exactly_once:\n{why}"
    assert report["records_out"]["total"] > 0 and report["records_in"]["total"] > 5_000
