"""State layouts of built topologies: per store its operator, key origin and operator facts;
repartition topics with their feeders; canonical JSON and a fingerprint that ignores the name."""

from __future__ import annotations

from pathlib import Path

from processor.graph import build_topology
from processor.graph.layout import StoreLayout, state_layout
from processor.spec import load_spec, load_spec_text

TOPOLOGIES = Path(__file__).resolve().parents[3] / "topologies"


def _layout(text: str):
    return state_layout(build_topology(load_spec_text(text)))


def test_revenue_per_user_aggregate_after_a_repartition():
    layout = state_layout(build_topology(load_spec(TOPOLOGIES / "revenue_per_user.yaml")))
    totals = layout.stores["totals"]
    assert totals.changelog == "revenue-per-user-totals-changelog"
    assert totals.operator == "aggregate"
    assert totals.facts["key"] == {"format": "json", "from": ["key_by value['user']"]}
    assert [(f["name"], f["function"], f["expression"]) for f in totals.facts["fields"]] == [
        ("orders", "count", None), ("revenue", "sum", "value['amount']"),
        ("avg_order", "avg", "value['amount']"), ("largest", "max", "value['amount']"),
        ("last_country", "last", "value['country']")]
    repartition = layout.repartitions["revenue-per-user-totals-repartition"]
    assert repartition.key_format == "json"
    assert repartition.feeders == ("key_by value['user']",)
    assert "filter value['amount'] > 0 and value['status'] != 'cancelled'" in layout.stateless


def test_source_key_window_process_and_reconcile_facts():
    gmv = state_layout(build_topology(load_spec(TOPOLOGIES / "gmv_dashboard.yaml"))).stores["gmv"]
    assert gmv.facts["window"] == {"kind": "tumbling", "size": 1000}
    assert gmv.facts["allowed_lateness"] == 1000 and gmv.facts["emit"] == "final"
    logins = state_layout(build_topology(load_spec(TOPOLOGIES / "failed_logins.yaml")))
    failures = logins.stores["failures"]
    assert failures.facts["function"] == "login_alerts:on_login"
    assert failures.facts["key"] == {"format": "string",
                                     "from": ["record key of topic logins (string)"]}
    rec = state_layout(build_topology(load_spec(TOPOLOGIES / "reconciliation.yaml")))
    groups = rec.stores["groups"]
    assert groups.facts["sides"] == ["orders", "payments"]
    assert groups.facts["key"]["from"] == ["side 0: record key of topic orders (string)",
                                           "side 1: key_by value['order_id']"]


BRANCHED = """
name: app
sources:
  orders: {topic: orders, key: {format: json}}
pipelines:
  - from: orders
    steps:
      - key_by: "value[ 'user' ]"
      - branch:
          - when: "value['x'] > 1"
            steps:
              - aggregate: {store: big, n: count()}
          - default:
              - aggregate: {store: rest, n: count(), top: {python: "json:loads", initial: 7}}
"""


def test_key_found_through_branch_cases_and_normalized():
    layout = _layout(BRANCHED)
    for store in ("big", "rest"):
        assert layout.stores[store].facts["key"]["from"] == ["key_by value['user']"]
    top = layout.stores["rest"].facts["fields"][1]
    assert top == {"name": "top", "function": "python", "expression": "json:loads",
                   "initial": 7, "merge": None}


def test_canonical_json_round_trips_and_the_fingerprint_ignores_the_name():
    totals = state_layout(build_topology(load_spec(TOPOLOGIES / "revenue_per_user.yaml"))
                          ).stores["totals"]
    raw = totals.to_json()
    assert raw == StoreLayout.from_json(raw).to_json()
    assert b" " not in raw.replace(b"' '", b"").split(b'"fields"')[0]  # compact, sorted keys
    renamed = StoreLayout("other", "x-other-changelog", dict(totals.facts))
    assert renamed.fingerprint == totals.fingerprint and len(totals.fingerprint) == 12
    assert renamed.to_json() != raw
