"""The shipped example topologies (topologies/reconciliation.yaml, fraud_detection.yaml) end to
end on a real broker: their own generators' data in, output compared with their oracles
(processor/examples/) exactly — every key, every field, which topic it went to, and once.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
import pytest

from processor.examples import fraud, reconciliation
from processor.examples.fraud_model import ENV_VAR, load_model, train_fraud_model
from processor.tools.generator import create_topic, produce_json
from tests.integration.kafka import WorkerProcess, read_all, topology_file

pytestmark = pytest.mark.integration

PARTITIONS = 4
IDLE = "6s"  # below the reconciliation sources' idle_timeout (30 s): no partition goes idle


def _outputs(bootstrap: str, topics: dict[str, str]) -> tuple[dict[str, tuple[str, Any]],
                                                                Counter[str]]:
    """key -> (sink name, value) over the sink topics, and how often each key was written."""
    got: dict[str, tuple[str, Any]] = {}
    seen: Counter[str] = Counter()
    for sink, topic in topics.items():
        for k, v, _ in read_all(bootstrap, topic):
            assert k is not None and v is not None, (sink, k, v)
            key = k.decode()
            seen[key] += 1
            got[key] = (sink, orjson.loads(v))
    return got, seen


def _topic_replacements(topics: dict[str, str]) -> dict[str, str]:
    """`topic: <name>` as the YAML writes it (end of line, or in a flow mapping) -> unique."""
    return {f"topic: {t}{end}": f"topic: {u}{end}" for t, u in topics.items() for end in "\n,"}


def _final_watermark(*topics: list[reconciliation.Record]) -> int:
    """What the reconcile task's watermark ends at once everything is read: the minimum over
    every partition of both source topics of (its highest event time - max_out_of_orderness)
    — no partition goes idle within the run."""
    high: dict[tuple[int, int], int] = {}
    for t, records in enumerate(topics):
        for _, value, partition in records:
            assert partition is not None
            high[t, partition] = max(high.get((t, partition), value["ts"]), value["ts"])
    assert len(high) == len(topics) * PARTITIONS, sorted(high)
    return min(high.values()) - reconciliation.MAX_OUT_OF_ORDERNESS_MS


def _diff(got: dict[str, Any], want: dict[str, Any]) -> str:
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    wrong = [(k, got[k], want[k]) for k in sorted(set(got) & set(want)) if got[k] != want[k]]
    return (f"missing {len(missing)} {missing[:5]}, unexpected {len(extra)} "
            f"{[(k, got[k]) for k in extra[:3]]}, differing {len(wrong)} {wrong[:3]}")


def test_reconciliation_example_equals_oracle(broker, tmp_path, unique):
    topics = {"orders": f"orders-{unique}", "payments": f"payments-{unique}",
              "reconciled": f"reconciled-{unique}", "discrepancies": f"discrepancies-{unique}"}
    name = f"reconciliation-{unique}"
    topology = topology_file(tmp_path, "reconciliation.yaml", name, {
        "name: reconciliation": f"name: {name}", **_topic_replacements(topics)})
    text = topology.read_text()
    assert all(text.count(f"topic: {t}") == 1 for t in topics.values()), text
    # 400 orders over 1000 s of event time (> the 10 min timeout): the unpaid orders and orphan
    # payments of the first ~400 s time out, the later ones stay open
    sample = reconciliation.generate(
        400, seed=11, interval_ms=2500, missing_share=0.04, orphan_share=0.02,
        duplicate_share=0.01, out_of_order_share=0.02, partitions=PARTITIONS)
    watermark = _final_watermark(sample.orders, sample.payments)
    want = reconciliation.expected(sample.orders, sample.payments, watermark)
    # the sample exercises every kind of result, and leaves some groups open
    statuses = Counter((v["status"], tuple(v["missing"]), "repeats" in v) for v in want.values())
    for kind in [("matched", (), False), ("mismatched", (), False),
                 ("incomplete", ("payments",), False), ("incomplete", ("orders",), False),
                 ("incomplete", ("orders",), True)]:
        assert statuses[kind] > 0, statuses
    open_groups = (sample.missing | sample.orphans) - set(want)
    assert open_groups, "every group closes: the test would not see the watermark hold back"
    assert sample.out_of_order["orders"] > 0 and sample.out_of_order["payments"] > 0

    for t in ("orders", "payments"):
        create_topic(broker.bootstrap, topics[t], PARTITIONS)
    produce_json(broker.bootstrap, topics["orders"], sample.orders)
    produce_json(broker.bootstrap, topics["payments"], sample.payments)
    w = WorkerProcess(topology, broker.bootstrap, tmp_path / "state", tmp_path, idle=IDLE)
    assert w.wait() == 0, w.log_text()

    got, seen = _outputs(broker.bootstrap, {s: topics[s] for s in ("reconciled", "discrepancies")})
    repeated = {k: n for k, n in seen.items() if n > 1}
    assert not repeated, f"keys written more than once: {sorted(repeated.items())[:5]}"
    routed = {k: ("reconciled" if v["status"] == "matched" else "discrepancies", v)
              for k, v in want.items()}
    assert got == routed, _diff(got, routed)


def test_fraud_example_equals_oracle(broker, tmp_path, unique):
    topics = {"transactions": f"transactions-{unique}", "customers": f"customers-{unique}",
              "fraud-rules": f"fraud-rules-{unique}", "fraud-alerts": f"fraud-alerts-{unique}",
              "transactions-scored": f"transactions-scored-{unique}"}
    name = f"fraud-detection-{unique}"
    topology = topology_file(tmp_path, "fraud_detection.yaml", name, {
        "name: fraud-detection": f"name: {name}", **_topic_replacements(topics)})
    text = topology.read_text()
    assert all(text.count(f"topic: {t}") == 1 for t in topics.values()), text
    model_path = tmp_path / "model" / "fraud_model.joblib"
    train_fraud_model(model_path, n_transactions=4000)
    model = load_model(model_path)
    sample = fraud.generate(600, n_customers=120, seed=5, fraud_share=0.08,
                            unknown_customer_share=0.05, partitions=PARTITIONS)
    rules = {"threshold": {"min_score": 0.7}, "blocked_countries": {"countries": ["kp", "ir"]},
             "max_amount": {"limit": 400}}
    want = fraud.expected(sample.transactions, sample.customers, rules, model)
    reasons = Counter(r for v in want.values() for r in v["reasons"])
    assert set(reasons) == {"high_score", "blocked_country", "over_limit"}, reasons
    assert 0 < sum(v["flagged"] for v in want.values()) < len(want)
    assert any(v["segment"] is None for v in want.values())  # unknown customers too
    # every published rule changes some outcome: the YAML's fallbacks would not pass this test
    for rule in rules:
        without = fraud.expected(sample.transactions, sample.customers,
                                 {r: v for r, v in rules.items() if r != rule}, model)
        assert without != want, f"rule {rule!r} changes nothing in this sample"

    create_topic(broker.bootstrap, topics["transactions"], PARTITIONS)
    create_topic(broker.bootstrap, topics["customers"], PARTITIONS)
    create_topic(broker.bootstrap, topics["fraud-rules"], 1)
    produce_json(broker.bootstrap, topics["customers"], sample.customers)
    produce_json(broker.bootstrap, topics["fraud-rules"], fraud.rule_records(rules))
    produce_json(broker.bootstrap, topics["transactions"], sample.transactions)
    w = WorkerProcess(topology, broker.bootstrap, tmp_path / "state", tmp_path, idle=IDLE,
                      env={ENV_VAR: str(model_path)})
    assert w.wait() == 0, w.log_text()

    sinks = {"alerts": topics["fraud-alerts"], "scored": topics["transactions-scored"]}
    # output records are keyed by customer id: index them by txn id
    got: dict[str, tuple[str, Any]] = {}
    for sink, topic in sinks.items():
        for k, v, _ in read_all(broker.bootstrap, topic):
            value = orjson.loads(v)
            assert k.decode() == value["customer_id"], (k, value)
            assert value["txn_id"] not in got, f"{value['txn_id']} written twice"
            got[value["txn_id"]] = (sink, value)
    routed = {t: ("alerts" if v["flagged"] else "scored", v) for t, v in want.items()}
    assert got == routed, _diff(got, routed)
