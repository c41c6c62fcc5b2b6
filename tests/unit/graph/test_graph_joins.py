"""Spec -> sub-topologies for multi-stream topologies: merge, branch, joins, tables."""

from __future__ import annotations

import pytest

from processor.errors import SpecErrors
from processor.graph import build_topology
from processor.runtime.kafka.collector import RecordCollector
from processor.spec import load_spec_text

RECONCILE = """\
name: recon
sources:
  orders: {topic: orders, timestamp: {field: ts}}
  payments: {topic: payments, timestamp: {field: ts}}
pipelines:
  - from: orders
    steps:
      - key_by: "value['order_id']"
      - reconcile:
          with: [payments]
          keys: {payments: "value['order_id']"}
          timeout: 10m
          mismatch: "value['orders']['amount'] != value['payments']['amount']"
      - branch:
          - when: "value['status'] == 'matched'"
            steps: [{to: {topic: reconciled, partitions: 2}}]
          - default:
              - to: {topic: discrepancies, partitions: 2}
"""


def build(text: str):
    return build_topology(load_spec_text(text))


def test_reconcile_repartitions_both_inputs_into_one_topic_with_sides():
    topo = build(RECONCILE)
    orders, payments, joined = topo.subtopologies
    assert (orders.source.topic, payments.source.topic) == ("orders", "payments")
    topic = "recon-reconcile-0-1-repartition"
    assert joined.source.topic == topic and joined.source.internal
    assert joined.source.upstream_topics == ("orders", "payments")
    (o_sink,) = [s for s in orders.sinks if s.internal]
    (p_sink,) = [s for s in payments.sinks if s.internal]
    assert (o_sink.feeder, o_sink.side, p_sink.feeder, p_sink.side) == (0, 0, 1, 1)
    # the payments side keys its records by the business id before the repartition
    assert [n.kind for n in payments.chains[0]] == ["key_by", "to"]
    # the join sub: reconcile then a branch whose two cases are child chains
    assert [n.kind for n in joined.chains[0]] == ["reconcile", "branch"]
    assert joined.parents == {1: (0, 0), 2: (0, 1)}
    assert [s.store.name for s in joined.chains[0] if s.store] == ["reconcile-0-1"]
    text = topo.describe()
    assert "case 1 of the branch ending chain 0" in text
    assert "watermark: minimum over the partitions of orders, payments" in text


def test_feeder_slots_number_partitions_after_earlier_feeders():
    topo = build(RECONCILE)
    collector = RecordCollector(lambda: None, {"orders": 4, "payments": 3})  # type: ignore[arg-type]
    o_sink = next(s for s in topo.subtopologies[0].sinks if s.internal)
    p_sink = next(s for s in topo.subtopologies[1].sinks if s.internal)
    assert [collector.slot(o_sink, p) for p in range(4)] == [0, 1, 2, 3]
    assert [collector.slot(p_sink, p) for p in range(3)] == [4, 5, 6]


def test_merge_of_stateless_steps_runs_in_each_source_and_a_stateful_step_unifies():
    topo = build("""\
name: m
sources:
  eu: {topic: orders-eu}
  us: {topic: orders-us}
pipelines:
  - from: [eu, us]
    steps:
      - filter: "value['amount'] > 0"
      - to: {topic: all-orders, partitions: 1}
      - aggregate: {store: totals, n: count()}
      - to: {topic: totals, partitions: 1}
""")
    eu, us, totals = topo.subtopologies
    for sub in (eu, us):
        assert [n.kind for n in sub.chains[0]] == ["filter", "to", "to"]
    assert totals.source.topic == "m-totals-repartition"
    assert totals.source.upstream_topics == ("orders-eu", "orders-us")
    assert [n.kind for n in totals.chains[0]] == ["aggregate", "to"]


def test_partitioned_table_join_needs_no_repartition_and_records_copartitioning():
    topo = build("""\
name: enrich
sources:
  tx: {topic: transactions}
  customers: {topic: customers, kind: table}
  rules: {topic: rules, kind: broadcast}
  countries: {topic: countries, kind: global_table}
pipelines:
  - from: tx
    steps:
      - join: {table: customers, type: left, as: customer}
      - join: {table: countries, key: "value['country']", as: country}
      - to: {topic: enriched, partitions: 1}
""")
    (sub,) = topo.subtopologies
    assert [t.name for t in sub.tables] == ["customers"]
    assert [t.name for t in topo.global_tables] == ["countries"]
    assert [t.name for t in topo.broadcasts] == ["rules"]
    assert [(a, b) for a, b, _ in topo.copartitioned] == [("transactions", "customers")]
    assert set(topo.input_topics) == {"transactions", "customers", "countries", "rules"}
    assert "Table customers: topic customers (RocksDB per task" in topo.describe()


def test_table_join_after_key_change_repartitions_like_the_table():
    topo = build("""\
name: enrich
sources:
  tx: {topic: transactions, partitions: 8}
  customers: {topic: customers, kind: table, partitions: 4}
pipelines:
  - from: tx
    steps:
      - key_by: "value['customer_id']"
      - join: {table: customers}
      - to: {topic: enriched, partitions: 1}
""")
    _, joined = topo.subtopologies
    assert joined.source.partitions_like == "customers"
    assert [a for a, _, _ in topo.copartitioned] == ["enrich-join-0-1-repartition"]


def test_interval_join_output_names_and_self_join_needs_a_name():
    topo = build("""\
name: j
sources:
  orders: {topic: orders}
  shipments: {topic: shipments}
pipelines:
  - from: orders
    steps:
      - interval_join: {with: shipments, before: 1m, after: 1h, type: outer}
      - to: {topic: joined, partitions: 1}
""")
    joined = topo.subtopologies[-1]
    assert joined.chains[0][0].label.startswith("outer orders with shipments within [-60000ms, +3600000ms]")
    with pytest.raises(SpecErrors, match="need distinct names"):
        build("""\
name: j
sources:
  orders: {topic: orders}
pipelines:
  - from: orders
    steps:
      - interval_join: {with: orders, before: 1m, after: 1m}
      - to: {topic: joined, partitions: 1}
""")


def test_nested_branch_store_names_include_the_case():
    topo = build("""\
name: b
sources:
  clicks: {topic: clicks}
pipelines:
  - from: clicks
    steps:
      - branch:
          - when: "value['kind'] == 'buy'"
            steps:
              - aggregate: {n: count()}
              - to: {topic: buys, partitions: 1}
          - default:
              - aggregate: {n: count()}
              - to: {topic: others, partitions: 1}
""")
    names = sorted(s.name for s in topo.stores)
    assert names == ["aggregate-0-0-0-0", "aggregate-0-0-1-0"]


def test_a_bad_step_after_a_merge_is_reported_once():
    with pytest.raises(SpecErrors) as info:
        build("""\
name: m
sources:
  eu: {topic: orders-eu}
  us: {topic: orders-us}
pipelines:
  - from: [eu, us]
    steps:
      - filter: "value['amount'] >"
      - to: {topic: all-orders, partitions: 1}
""")
    assert len(info.value.errors) == 1


INTERVAL = """\
name: paid
sources:
  orders: {topic: orders, key: {format: string}, timestamp: {field: ts}}
  payments: {topic: payments, key: {format: string}, timestamp: {field: ts}}
pipelines:
  - from: orders
    steps:
      - interval_join: {with: payments, before: 1m, after: 5m, type: inner}
      - to: {topic: paid}
"""


@pytest.mark.parametrize(("text", "side", "cold"), [
    (INTERVAL, 1, False),  # a payment meeting its order, whose records are in memory
    (RECONCILE, 0, True),  # an order again, its group read back from the store
], ids=["interval_join", "reconcile"])
def test_built_joins_keep_compact_key_bytes(tmp_path, text, side, cold):
    """orjson's bytes keep a 4 KiB buffer each. A join keeps its keys' bytes in its state (a
    key's records or open group, the expiry index), so the operator the graph builds must encode
    keys as compact copies: a record of a key already held cost 4 KiB more than its own bytes
    when they were orjson's."""
    from processor.graph.model import BuildContext
    from processor.state import RocksStore
    from tests.traced import traced_bytes

    joined = build(text).subtopologies[2]
    op = joined.chains[0][0].build(BuildContext(emitter_for=lambda end, p: (lambda batch: None)))
    store = RocksStore(tmp_path / "s")
    op.bind(store)
    keys = 2000
    op.process([(f"o{i}", (0, {"order_id": f"o{i}", "amount": 5}), 1000 + i, i)
                for i in range(keys)])  # each key's first record: held from here on
    if cold:
        store.apply(op.flush()[1], {})
        op.committed()
        op.trim_cache()
    again = [(f"o{i}", (side, {"order_id": f"o{i}", "amount": 5}), 2000 + i, keys + i)
             for i in range(keys)]
    with traced_bytes() as kept:
        out = op.process(again)
        del out
        held = kept() / keys
    # measured: 4,661 (interval join) and 4,520 (reconcile) bytes with orjson's bytes, 612 and 471
    # as copies
    assert held < 2500, f"{held:.0f} bytes kept per record of a key already held"
    store.close()
