"""Every classification rule of graph/compat.py, table-driven: a base topology, one edit of
its YAML, the verdict and the words of the reason."""

from __future__ import annotations

import dataclasses

import pytest

from processor.graph import build_topology
from processor.graph.compat import Verdict, classify
from processor.graph.layout import state_layout
from processor.spec import load_spec_text

BASE = """
name: app
sources:
  orders: {topic: orders}
  payments: {topic: payments}
  refunds: {topic: refunds}
pipelines:
  - from: orders
    name: orders
    steps:
      - filter: "value['amount'] > 0"
      - key_by: "value['user']"
      - aggregate:
          store: totals
          n: count()
          revenue: sum(value['amount'])
          top: max(value['amount'])
  - from: orders
    steps:
      - window: {tumbling: 1s, store: per-second, late: drop, allowed_lateness: 1s}
      - aggregate: {n: count()}
  - from: orders
    steps:
      - interval_join: {with: payments, before: 1s, after: 1s, store: matched}
  - from: orders
    steps:
      - process: {python: "json:loads", store: custom}
  - from: orders
    name: o2
    steps:
      - reconcile: {with: [payments], timeout: 1m, store: groups}
  - from: orders
    steps:
      - aggregate: {store: reduced, r: {python: "operator:add", initial: 0}}
"""

C, M, X = Verdict.COMPATIBLE, Verdict.MIGRATION, Verdict.INCOMPATIBLE  # X: incompatible

CASES = [
    # (what, old text, new text, verdict, words of the reason)
    ("stateless step changed", "value['amount'] > 0", "value['amount'] >= 0", C,
     "stateless steps: removed filter"),
    ("pipeline added", "  - from: orders\n    steps:\n      - process",
     "  - from: orders\n    steps:\n      - aggregate: {store: extra, n: count()}\n"
     "  - from: orders\n    steps:\n      - process", C, "store extra: added (aggregate)"),
    ("store removed", "      - process: {python: \"json:loads\", store: custom}\n",
     "      - filter: 'True'\n", C, "store custom: removed: its changelog app-custom-changelog "
     "is left behind; delete it"),
    ("field added at the end", "top: max(value['amount'])",
     "top: max(value['amount'])\n          low: min(value['amount'])", M,
     "store totals: field 'low' (min(value['amount'])) added at the end"),
    ("python field added with its initial value", "top: max(value['amount'])",
     "top: max(value['amount'])\n          r: {python: 'json:loads', initial: 5}", M,
     "initial value 5"),
    ("field removed", "          revenue: sum(value['amount'])\n", "", M,
     "store totals: field 'revenue' (sum(value['amount'])) removed"),
    ("store renamed", "store: custom", "store: custom2", M,
     "store custom2: same layout as removed store custom: probably a rename"),
    ("field function changed", "revenue: sum(", "revenue: avg(", X,
     "store totals: field 'revenue': function sum -> avg"),
    ("fields reordered", "          revenue: sum(value['amount'])\n          top: max(value['amount'])",
     "          top: max(value['amount'])\n          revenue: sum(value['amount'])", X,
     "store totals: fields reordered (n, revenue, top -> n, top, revenue)"),
    ("field inserted in the middle", "          top: max", "          mid: min(value['x'])\n"
     "          top: max", X, "field 'mid' (min(value['x'])) inserted before existing fields"),
    ("field expression changed", "sum(value['amount'])", "sum(value['amount'] * 100)", C,
     "field 'revenue': expression value['amount'] -> value['amount'] * 100"),
    ("key_by changed", "key_by: \"value['user']\"", "key_by: \"value['country']\"", X,
     "store totals: key key_by value['user'] -> key_by value['country']"),
    ("key format changed", "orders: {topic: orders}",
     "orders: {topic: orders, key: {format: json}}", X, "store per-second: key format string -> json"),
    ("window size changed", "tumbling: 1s", "tumbling: 2s", X,
     "store per-second: tumbling window size 1000 -> 2000"),
    ("window kind changed", "tumbling: 1s", "session: 1s", X,
     "store per-second: window kind tumbling -> session"),
    ("allowed lateness changed", "allowed_lateness: 1s", "allowed_lateness: 5s", C,
     "store per-second: window allowed lateness 1000 -> 5000"),
    ("join type changed", "before: 1s, after: 1s,", "before: 1s, after: 1s, type: left,", X,
     "store matched: join type inner -> left"),
    ("join bounds changed", "before: 1s, after: 1s,", "before: 2s, after: 1s,", C,
     "store matched: before 1000 -> 2000"),
    ("process function changed", "python: \"json:loads\"", "python: \"json:dumps\"", X,
     "store custom: process function json:loads -> json:dumps"),
    ("operator changed", "      - process: {python: \"json:loads\", store: custom}",
     "      - aggregate: {store: custom, n: count()}", X,
     "store custom: operator process -> aggregate"),
    ("reconcile input added", "with: [payments]", "with: [payments, refunds]", X,
     "store groups: inputs o2, payments -> o2, payments, refunds"),
    ("reconcile input renamed", "name: o2", "name: o3", C,
     "store groups: inputs renamed o2, payments -> o3, payments"),
    ("reducer reference changed", "operator:add", "operator:mul", X,
     "store reduced: field 'r': reducer operator:add -> operator:mul"),
    ("reducer initial value changed", "initial: 0", "initial: 1", C,
     "store reduced: field 'r': initial value or merge function changed"),
    ("application renamed", "name: app", "name: app2", M,
     "changelog app-totals-changelog -> app2-totals-changelog"),
]


def _layout(text: str):
    return state_layout(build_topology(load_spec_text(text)))


@pytest.mark.parametrize(("what", "old", "new", "verdict", "words"), CASES,
                         ids=[c[0] for c in CASES])
def test_rule(what, old, new, verdict, words):
    assert old in BASE, what
    result = classify(_layout(BASE), _layout(BASE.replace(old, new, 1)))
    assert result.verdict is verdict, [r.render() for r in result.reasons]
    rendered = [r.render() for r in result.reasons]
    assert any(words in r for r in rendered), rendered
    assert result.reasons[0].verdict is verdict  # the worst reason comes first


def test_unchanged_topology_has_no_reasons():
    result = classify(_layout(BASE), _layout(BASE))
    assert result.verdict is C and result.reasons == []
    assert (result.topics.created, result.topics.orphaned, result.topics.changed) == ([], [], [])


def test_internal_topics_touched():
    new = BASE.replace("store: custom", "store: custom2").replace(
        "key_by: \"value['user']\"", "key_by: \"value['country']\"")
    topics = classify(_layout(BASE), _layout(new)).topics
    assert topics.created == ["app-custom2-changelog"]
    assert topics.orphaned == ["app-custom-changelog"]
    assert topics.changed == ["app-totals-repartition"]
    dropped = BASE.replace("      - key_by: \"value['user']\"\n", "")
    topics = classify(_layout(BASE), _layout(dropped)).topics
    assert "app-totals-repartition" in topics.orphaned


@pytest.mark.parametrize(("store", "now"), [("matched", "records-1"), ("groups", "groups-1")])
def test_a_join_store_of_the_process_function_format_is_refused(store: str, now: str) -> None:
    """Interval joins and reconciles kept process-function state before (no state_format in
    their layout): the new operators cannot read it, so the change is incompatible, never silent."""
    new = _layout(BASE)
    layout = new.stores[store]
    assert layout.facts["state_format"] == now
    old_facts = {k: v for k, v in layout.facts.items() if k != "state_format"}
    old = dataclasses.replace(new, stores={**new.stores,
                                           store: dataclasses.replace(layout, facts=old_facts)})
    result = classify(old, new)
    assert result.verdict is X
    assert any(f"store {store}: state format process state -> {now}" in r.render()
               for r in result.reasons)
