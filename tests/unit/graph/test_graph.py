"""Spec -> sub-topologies: repartition points, shared sources, stores and their topics."""

from __future__ import annotations

import pytest

from processor.graph import BuildContext, TopicEnd, build_topology
from processor.operators import Aggregate, Filter, KeyBy, MapValue, Sink
from processor.operators.fusion import Fused
from processor.spec import load_spec, load_spec_text
from tests.paths import REPO

ROOT = REPO

REKEYED = """\
name: shop
sources:
  orders: {topic: orders, timestamp: {field: ts}}
pipelines:
  - from: orders
    steps:
      - filter: "value['amount'] > 0"
      - key_by: "value['user']"
      - aggregate:
          store: totals
          n: count()
          revenue: sum(value['amount'])
      - to: {topic: totals-out}
"""

SAME_KEY = """\
name: shop
sources:
  orders: {topic: orders}
pipelines:
  - from: orders
    steps:
      - map: "dict(value, amount=value['amount'] * 100)"
      - aggregate:
          store: per-order
          n: count()
      - to: {topic: counts}
"""

TWO_PIPELINES = """\
name: shop
sources:
  orders: {topic: orders}
  orders_again: {topic: orders}
pipelines:
  - from: orders
    steps:
      - filter: "value['amount'] > 0"
      - to: {topic: positive}
  - from: orders_again
    steps:
      - aggregate: {store: per-order, n: count()}
      - to: {topic: counts}
"""


def build(text: str):
    return build_topology(load_spec_text(text, file="t.yaml"))


def kinds(sub) -> list[list[str]]:
    return [[step.kind for step in chain] for chain in sub.chains]


def collecting_context() -> tuple[BuildContext, dict[str, list]]:
    outputs: dict[str, list] = {}

    def emitter_for(end: TopicEnd, *_task_partition: int):
        return outputs.setdefault(end.topic, []).extend

    return BuildContext(emitter_for=emitter_for), outputs


def test_key_by_then_aggregate_splits_into_two_subtopologies():
    topo = build(REKEYED)
    assert topo.name == "shop"
    first, second = topo.subtopologies
    assert (first.id, second.id) == (0, 1)

    assert first.source.topic == "orders"
    assert not first.source.internal
    assert first.source.timestamp_field == "ts"
    assert kinds(first) == [["filter", "key_by", "to"]]
    (repartition,) = first.sinks
    assert repartition.topic == "shop-totals-repartition"
    assert repartition.internal
    assert first.stores == []

    assert second.source == repartition
    assert (second.source.key_format, second.source.value_format) == ("json", "json")
    assert kinds(second) == [["aggregate", "to"]]
    (store,) = second.stores
    assert store.name == "totals"
    assert store.changelog_topic == "shop-totals-changelog"
    assert store.subtopology == 1
    assert [s.topic for s in second.sinks] == ["totals-out"]

    assert topo.source_topics == ["orders", "shop-totals-repartition"]
    assert topo.stores == [store]
    assert topo.subtopology_for("shop-totals-repartition") is second
    with pytest.raises(KeyError):
        topo.subtopology_for("unknown")


def test_repartition_topic_for_unnamed_store_uses_generated_store_name():
    topo = build(REKEYED.replace("          store: totals\n", ""))
    (store,) = topo.stores
    assert store.name == "aggregate-0-2"
    assert topo.source_topics == ["orders", "shop-aggregate-0-2-repartition"]
    assert store.changelog_topic == "shop-aggregate-0-2-changelog"


def test_python_step_also_marks_the_key_as_changed():
    text = REKEYED.replace("      - key_by: \"value['user']\"", "      - python: 'math:floor'")
    topo = build(text)
    assert [kinds(s) for s in topo.subtopologies] == [[["filter", "python", "to"]], [["aggregate", "to"]]]


def test_aggregate_on_source_key_stays_in_one_subtopology():
    topo = build(SAME_KEY)
    (sub,) = topo.subtopologies
    assert sub.source.topic == "orders"
    assert kinds(sub) == [["map", "aggregate", "to"]]
    assert [s.name for s in sub.stores] == ["per-order"]
    assert not any(end.internal for end in sub.sinks)


def test_two_pipelines_from_the_same_topic_share_one_subtopology():
    topo = build(TWO_PIPELINES)
    (sub,) = topo.subtopologies
    assert kinds(sub) == [["filter", "to"], ["aggregate", "to"]]
    assert [s.topic for s in sub.sinks] == ["positive", "counts"]
    assert [s.name for s in sub.stores] == ["per-order"]


def test_same_topic_with_different_settings_is_an_error():
    text = TWO_PIPELINES.replace("orders_again: {topic: orders}",
                                 "orders_again: {topic: orders, value: {format: string}}")
    from processor.errors import SpecErrors

    with pytest.raises(SpecErrors) as info:
        build(text)
    (err,) = info.value.errors
    assert (err.line, err.path) == (10, "pipelines[1].from")
    assert "read by two sources with different settings" in err.message


def test_describe_mentions_stores_changelogs_and_repartition_topics():
    text = build(REKEYED).describe()
    assert "Topology shop" in text
    assert "Sub-topology 0: reads topic orders" in text
    assert "event time from value field 'ts'" in text
    assert "Sub-topology 1: reads internal repartition topic shop-totals-repartition" in text
    assert "[store totals, changelog shop-totals-changelog]" in text
    assert "totals: RocksDB per partition, changelog topic shop-totals-changelog" in text
    assert "Repartition topics: shop-totals-repartition" in text
    assert "n=count(), revenue=sum(value['amount'])" in text


def test_describe_without_state():
    text = build_topology(load_spec(ROOT / "topologies" / "clean_orders.yaml")).describe()
    assert "State stores: none" in text
    assert "Repartition topics: none" in text
    assert "orders-clean (sink)" in text


def test_build_chains_instantiates_operators_per_task():
    topo = build(REKEYED)
    ctx, outputs = collecting_context()
    (chain0,) = topo.subtopologies[0].build_chains(ctx)[0]
    # consecutive expression steps are fused into one generated loop
    assert [type(op) for op in chain0] == [Fused, Sink]
    assert [type(op) for op in chain0[0].ops] == [Filter, KeyBy]
    (chain1,) = topo.subtopologies[1].build_chains(ctx)[0]
    assert [type(op) for op in chain1] == [Aggregate, Sink]
    assert chain1[0].store_name == "totals"
    # operators are fresh per build: two tasks never share aggregate caches
    (again,) = topo.subtopologies[1].build_chains(ctx)[0]
    assert again[0] is not chain1[0]

    batch = [("o1", {"amount": 5, "user": "u1"}, 1, 0), ("o2", {"amount": 0, "user": "u2"}, 2, 1)]
    for op in chain0:
        batch = op.process(batch)
    assert batch == [("u1", {"amount": 5, "user": "u1"}, 1, 0)]
    assert outputs["shop-totals-repartition"] == batch


def test_fields_projection_builds_a_dict():
    topo = build_topology(load_spec(ROOT / "topologies" / "clean_orders.yaml"))
    ctx, outputs = collecting_context()
    (chain,) = topo.subtopologies[0].build_chains(ctx)[0]
    assert isinstance(chain[0], Fused) and isinstance(chain[0].ops[1], MapValue)
    batch = [("o1", {"user": "u", "amount": 3, "country": "de"}, 0, 7),
             ("o2", {"user": "t", "amount": 1, "country": "fr", "test": True}, 0, 8)]
    for op in chain:
        batch = op.process(batch)
    expected = [("o1", {"order": "o1", "user": "u", "amount": 3, "country": "DE"}, 0, 7)]
    assert batch == expected
    assert outputs["orders-clean"] == expected
