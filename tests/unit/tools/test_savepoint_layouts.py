"""Savepoints and state layouts: `create` refuses a topology that would misread the recorded
state, `restore` refuses a target that would misread the savepoint's, with the reasons
`upgrade-check` gives; a compatible change (a filter, a renamed application) restores."""

from __future__ import annotations

import pytest

from processor.graph import build_topology
from processor.graph.layout import state_layout
from processor.spec import load_spec_text
from processor.tools.savepoint import check_recorded_layouts
from processor.tools.savepoint_format import SavepointError
from processor.tools.savepoint_migrate import plan_migration

TOPOLOGY = """
name: {name}
sources:
  orders: {{topic: orders}}
pipelines:
  - from: orders
    steps:
      - filter: "{filter}"
      - key_by: "value['user']"
      - aggregate:
          store: totals
          orders: count()
          revenue: {revenue}(value['amount'])
      - to: {{topic: totals-out}}
"""


def _topology(name: str = "shop", filter: str = "value['amount'] > 0", revenue: str = "sum"):
    return build_topology(load_spec_text(TOPOLOGY.format(name=name, filter=filter,
                                                         revenue=revenue)))


def _manifest(topology) -> dict:
    """The parts of a savepoint manifest `plan_migration` reads."""
    layout = state_layout(topology)
    return {"application": topology.name,
            "stores": {name: {"layout": s.to_dict()} for name, s in layout.stores.items()},
            "inflight": {t: {} for t in layout.repartitions}}


def test_restore_accepts_a_compatible_change_and_another_application_name():
    saved = _manifest(_topology())
    plan_migration(saved, _topology(filter="value['amount'] > 10"))
    plan_migration(saved, _topology(name="shop-v2"))  # blue/green: changelogs renamed


def test_restore_refuses_a_layout_it_would_misread():
    saved = _manifest(_topology())
    with pytest.raises(SavepointError, match=r"field 'revenue': function sum -> avg"):
        plan_migration(saved, _topology(revenue="avg"))


def test_create_refuses_state_recorded_with_another_layout():
    running = state_layout(_topology(revenue="avg")).stores["totals"]
    given = state_layout(_topology()).stores["totals"]
    check_recorded_layouts(given, {0: given.to_json(), 1: given.to_json()})
    with pytest.raises(SavepointError, match=r"store totals \(partition 1\).*avg -> sum"):
        check_recorded_layouts(given, {0: given.to_json(), 1: running.to_json()})
