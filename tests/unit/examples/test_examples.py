"""The example generators, oracles and fraud model (processor/examples/), without a broker.

The oracles are what the integration tests compare worker output with, so besides hand-made
cases they are checked against the topologies themselves: the YAML's expressions are compiled
with the real expression compiler and must agree with the oracles' Python mirrors.
"""

from __future__ import annotations

import importlib.util
import itertools
from collections import Counter
from types import MappingProxyType

import pytest

from processor.examples import fraud, reconciliation
from processor.examples.reconciliation import AmbiguousInput, expected
from processor.expressions import BroadcastStates, compile_expression
from processor.spec import load_spec
from tests.paths import REPO

ROOT = REPO
TOPOLOGIES = ROOT / "topologies"
T0 = 1_700_000_000_000
TIMEOUT = reconciliation.TIMEOUT_MS


# --- reconciliation: generator ------------------------------------------------------------------

def test_reconciliation_generator_is_deterministic():
    a = reconciliation.generate(500, seed=3, partitions=4)
    assert a == reconciliation.generate(500, seed=3, partitions=4)
    assert a.payments != reconciliation.generate(500, seed=4, partitions=4).payments


@pytest.mark.parametrize("partitions", [None, 4])
def test_reconciliation_anomalies_are_exactly_as_configured(partitions):
    n = 2000
    s = reconciliation.generate(n, seed=5, mismatch_share=0.04, missing_share=0.02,
                                orphan_share=0.015, duplicate_share=0.005,
                                out_of_order_share=0.01, partitions=partitions)
    orders = {k: v for k, v, _ in s.orders}
    assert len(orders) == len(s.orders) == n
    assert all(k == v["order_id"] for k, v in orders.items())
    paid = Counter(v["order_id"] for _, v, _ in s.payments)
    amounts = {v["order_id"]: v["amount"] for _, v, _ in s.payments}
    # measured from the records, not taken from the ground truth
    assert {o for o in orders if o not in paid} == s.missing and len(s.missing) == 40
    assert {o for o in orders if o in amounts and amounts[o] != orders[o]["amount"]} == s.mismatched
    assert len(s.mismatched) == 80
    assert {o for o in paid if o not in orders} == s.orphans and len(s.orphans) == 30
    assert {o for o, c in paid.items() if c > 1} == s.duplicated and len(s.duplicated) == 10
    assert set(paid.values()) == {1, 2} and s.duplicated <= s.orphans
    for topic, records in (("orders", s.orders), ("payments", s.payments)):
        assert reconciliation.count_out_of_order(records) == s.out_of_order[topic]
        assert s.out_of_order[topic] == round(0.01 * len({v["payment_id" if topic == "payments"
                                                           else "order_id"] for _, v, _ in records}))
        high = 0
        for _, v, _ in records:  # never later than the declared out-of-orderness
            assert high - v["ts"] < reconciliation.MAX_OUT_OF_ORDERNESS_MS
            high = max(high, v["ts"])
    for _, v, _ in s.payments:
        if v["order_id"] in orders:
            assert 0 <= v["ts"] - orders[v["order_id"]]["ts"] < TIMEOUT
    if partitions is None:
        assert {p for *_, p in s.orders + s.payments} == {None}
    else:
        # an out-of-order record and a duplicate share the partition of the record before them
        for records in (s.orders, s.payments):
            for (_, prev, p0), (_, cur, p1) in itertools.pairwise(records):
                if cur["ts"] < prev["ts"] or cur == prev:
                    assert p0 == p1
        assert {p for *_, p in s.orders} == set(range(4))


def test_reconciliation_generator_refuses_impossible_shares():
    with pytest.raises(ValueError, match="duplicates"):
        reconciliation.generate(100, orphan_share=0.01, duplicate_share=0.05)
    with pytest.raises(ValueError, match="out of order"):
        reconciliation.generate(100, interval_ms=10_000, out_of_order_share=0.1)


def test_reconciliation_oracle_on_a_generated_sample():
    s = reconciliation.generate(1000, seed=9)
    everything = expected(s.orders, s.payments, T0 + 10**9)
    statuses = Counter(v["status"] for v in everything.values())
    assert statuses == {"matched": 1000 - 20 - 30, "mismatched": 30, "incomplete": 20 + 10}
    assert {k for k, v in everything.items() if v.get("repeats")} == s.duplicated
    assert {k for k, v in everything.items() if v["missing"] == ["orders"]} == s.orphans
    assert {k for k, v in everything.items() if v["missing"] == ["payments"]} == s.missing
    # a watermark short of the end leaves the late incomplete groups open, nothing else
    last = max(v["ts"] for _, v, _ in s.orders)
    partial = expected(s.orders, s.payments, last)
    open_ids = set(everything) - set(partial)
    assert open_ids and all(everything[k]["status"] == "incomplete" for k in open_ids)
    for k in open_ids:
        ts = (everything[k]["orders"] or everything[k]["payments"])["ts"]
        assert ts + TIMEOUT > last


# --- reconciliation: oracle on hand-made input -------------------------------------------------

def order(oid, amount, ts):
    return (oid, {"order_id": oid, "amount": amount, "ts": ts})


def payment(pid, oid, amount, ts):
    return (pid, {"payment_id": pid, "order_id": oid, "amount": amount, "ts": ts}, 2)


def test_oracle_matched_and_mismatched_are_reported_whatever_the_watermark():
    orders = [order("o1", 10.0, T0), order("o2", 20.0, T0 + 1)]
    payments = [payment("p1", "o1", 10.0, T0 + 5), payment("p2", "o2", 19.99, T0 - 3)]
    out = expected(orders, payments, final_watermark=0)
    assert out == {
        "o1": {"key": "o1", "status": "matched", "missing": [], "orders": orders[0][1],
               "payments": payments[0][1]},
        "o2": {"key": "o2", "status": "mismatched", "missing": [], "orders": orders[1][1],
               "payments": payments[1][1]},
    }
    # within the tolerance of the topology's mismatch expression: matched
    assert expected([order("o3", 0.1 + 0.2, T0)], [payment("p3", "o3", 0.3, T0)], 0)["o3"][
        "status"] == "matched"


def test_oracle_missing_payment_is_reported_once_the_watermark_reaches_the_timeout():
    orders = [order("o1", 10.0, T0)]
    assert expected(orders, [], T0 + TIMEOUT - 1) == {}
    assert expected(orders, [], T0 + TIMEOUT) == {"o1": {
        "key": "o1", "status": "incomplete", "missing": ["payments"], "orders": orders[0][1],
        "payments": None}}


def test_oracle_orphan_payment_and_its_duplicate():
    p = payment("q1", "x1", 5.0, T0)
    assert expected([], [p], T0 + TIMEOUT) == {"x1": {
        "key": "x1", "status": "incomplete", "missing": ["orders"], "orders": None,
        "payments": p[1]}}
    twice = expected([], [p, p], T0 + TIMEOUT)
    assert twice["x1"]["repeats"] == {"payments": 1} and twice["x1"]["missing"] == ["orders"]
    assert expected([], [p, p], T0 + TIMEOUT - 1) == {}


def test_oracle_refuses_what_depends_on_arrival_order():
    o, p = order("o1", 10.0, T0), payment("p1", "o1", 10.0, T0 + 1)
    with pytest.raises(AmbiguousInput, match="repeats"):  # a duplicate of a complete group
        expected([o], [p, p], T0)
    with pytest.raises(AmbiguousInput, match="spans"):  # the payment may come after the timeout
        expected([o], [payment("p1", "o1", 10.0, T0 + TIMEOUT)], T0)
    with pytest.raises(AmbiguousInput, match="differing"):
        expected([], [payment("p1", "x", 1.0, T0), payment("p2", "x", 2.0, T0)], T0)
    copies = [payment("p1", "x", 1.0, T0), payment("p1", "x", 1.0, T0 + 10)]  # which ts is t0?
    with pytest.raises(AmbiguousInput, match="differing"):
        expected([], copies, T0 + TIMEOUT + 5)


def test_reconciliation_yaml_agrees_with_the_oracle():
    spec = load_spec(TOPOLOGIES / "reconciliation.yaml").spec
    for source in ("orders", "payments"):
        w = spec.sources[source].watermark
        assert w.max_out_of_orderness == reconciliation.MAX_OUT_OF_ORDERNESS_MS
    steps = spec.pipelines[0].steps
    rec = steps[0].reconcile
    assert rec.timeout == TIMEOUT and rec.with_ == ["payments"]
    assert spec.pipelines[0].from_ == reconciliation.ORDERS
    mismatch = compile_expression(rec.mismatch)
    s = reconciliation.generate(500, seed=11)
    for gid, v in expected(s.orders, s.payments, T0 + 10**9).items():
        if v["status"] != "incomplete":
            assert bool(mismatch(gid, {"orders": v["orders"], "payments": v["payments"]}, 0)) == (
                v["status"] == "mismatched")
    matched = compile_expression(steps[1].branch[0].when)
    assert matched(None, {"status": "matched"}, 0) and not matched(None, {"status": "incomplete"}, 0)


# --- fraud: generator ---------------------------------------------------------------------------

def test_fraud_generator_is_deterministic_and_has_the_configured_shares():
    a = fraud.generate(3000, n_customers=300, seed=5, fraud_share=0.04,
                       unknown_customer_share=0.02)
    assert a == fraud.generate(3000, n_customers=300, seed=5, fraud_share=0.04,
                               unknown_customer_share=0.02)
    assert a.transactions != fraud.generate(3000, n_customers=300, seed=6).transactions
    assert sum(a.labels.values()) == 120 and len(a.labels) == 3000
    known = {k for k, _, _ in a.customers}
    assert len(known) == 300
    assert sum(k not in known for k, _, _ in a.transactions) == 60
    assert all(k == v["customer_id"] for k, v, _ in a.transactions)
    assert "label" not in str(a.transactions[0])  # the truth is never sent
    # the latent pattern: fraud is more often abroad, at night, risky and larger than usual
    enriched = dict((v["txn_id"], v) for _, v in fraud.enrich(a.transactions, a.customers))
    def rate(feature: str, label: bool) -> float:
        i = fraud.FEATURE_NAMES.index(feature)
        rows = [fraud.features(enriched[t])[i] for t, y in a.labels.items() if y == label]
        return sum(rows) / len(rows)
    for feature in ("abroad", "night", "risky_category", "young_account"):
        assert rate(feature, True) > 2 * rate(feature, False)


def test_fraud_partitions_line_up_customers_and_their_transactions():
    s = fraud.generate(500, n_customers=50, partitions=4)
    where = {k: p for k, _, p in s.customers}
    assert all(where.get(k, p) == p for k, _, p in s.transactions)
    assert {p for *_, p in s.transactions} == set(range(4))


def test_features_of_an_unknown_customer_use_the_defaults():
    txn = {"amount": 120.0, "hour": 3, "country": "br", "merchant_category": "crypto"}
    f = dict(zip(fraud.FEATURE_NAMES, fraud.features({**txn, "customer": None}), strict=True))
    assert f["known_customer"] == 0 and f["abroad"] == 0 and f["segment_unknown"] == 1
    assert f["night"] == 1 and f["risky_category"] == 1 and f["young_account"] == 1
    assert len(fraud.features({**txn, "customer": None})) == len(fraud.FEATURE_NAMES)


# --- fraud: model, scoring step, oracle ----------------------------------------------------------

@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    from processor.examples.fraud_model import train_fraud_model

    path = tmp_path_factory.mktemp("model") / "fraud_model.joblib"
    metrics = train_fraud_model(path, n_transactions=8000, seed=7)
    return path, metrics


@pytest.fixture
def fraud_scoring(model_file, monkeypatch):
    """topologies/fraud_scoring.py, imported as the worker does (the topology's directory on
    sys.path), reading the module's model file."""
    monkeypatch.syspath_prepend(str(TOPOLOGIES))
    monkeypatch.setenv("PROCESSOR_FRAUD_MODEL", str(model_file[0]))
    import fraud_scoring

    fraud_scoring.reset()
    yield fraud_scoring
    fraud_scoring.reset()


# the fraud topology's broadcast states, as its graph builder would make them
BROADCAST = BroadcastStates()


@pytest.fixture
def rules_state():
    """Install a broadcast state {"rules": ...} for compiled expressions; restore afterwards."""
    previous = BROADCAST.state

    def install(rules):
        BROADCAST.install({"rules": MappingProxyType(dict(rules))})

    yield install
    BROADCAST.install(previous)


def test_training_is_fast_good_and_deterministic(model_file, tmp_path):
    from joblib import load

    from processor.examples.fraud_model import train_fraud_model

    path, metrics = model_file
    assert metrics["roc_auc"] >= 0.85, metrics
    assert metrics["test_rows"] == 2000 and metrics["seconds"] < 20
    again = train_fraud_model(tmp_path / "again.joblib", n_transactions=8000, seed=7)
    assert again["roc_auc"] == metrics["roc_auc"]
    a, b = load(path)["model"], load(tmp_path / "again.joblib")["model"]
    assert (a[-1].coef_ == b[-1].coef_).all()


def test_the_training_script_writes_where_told(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("train_fraud_model",
                                                  ROOT / "scripts" / "train_fraud_model.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "models" / "m.joblib"
    assert script.main(["--out", str(out), "--transactions", "3000"]) == 0
    assert out.is_file() and "ROC AUC" in capsys.readouterr().out


def test_score_loads_the_model_once_and_returns_a_probability(fraud_scoring):
    s = fraud.generate(200, n_customers=40, seed=1)
    before = fraud_scoring.loads
    for key, value in fraud.enrich(s.transactions, s.customers):
        out = fraud_scoring.score(key, value)
        assert out == {**value, "score": out["score"]}
        assert 0.0 <= out["score"] <= 1.0 and round(out["score"], 4) == out["score"]
    assert fraud_scoring.loads == before + 1


def test_a_missing_model_names_the_script_that_creates_it(fraud_scoring, monkeypatch, tmp_path):
    from processor.examples.fraud_model import ModelNotFoundError

    monkeypatch.setenv("PROCESSOR_FRAUD_MODEL", str(tmp_path / "absent.joblib"))
    with pytest.raises(ModelNotFoundError, match=r"scripts/train_fraud_model\.py") as err:
        fraud_scoring.score("c1", {"amount": 1.0, "hour": 12, "customer": None})
    assert "absent.joblib" in str(err.value)
    assert isinstance(err.value, FileNotFoundError)


def test_a_model_trained_on_other_features_is_refused(tmp_path):
    from joblib import dump

    from processor.examples.fraud_model import load_model

    dump({"model": None, "feature_names": ["amount"], "metrics": {}}, tmp_path / "old.joblib")
    with pytest.raises(ValueError, match="retrain"):
        load_model(tmp_path / "old.joblib")


@pytest.mark.parametrize("rules", [
    fraud.DEFAULT_RULES,
    {},  # nothing published yet: the YAML's defaults
    {**fraud.DEFAULT_RULES, "threshold": {"min_score": 0.3}, "max_amount": None},
])
def test_fraud_yaml_expressions_agree_with_the_oracle(rules, model_file, fraud_scoring, rules_state):
    """Run the topology's steps after the join by hand — scoring function, projection with the
    rules, flag, branch — and compare with fraud.expected for the same rules and model."""
    from processor.examples.fraud_model import load_model

    spec = load_spec(TOPOLOGIES / "fraud_detection.yaml").spec
    assert spec.sources["rules"].kind == "broadcast" and spec.sources["customers"].kind == "table"
    join, score_step, project, flag, branch = spec.pipelines[0].steps
    assert join.join.type == "left" and join.join.as_ == "customer"
    assert score_step.map.python == "fraud_scoring:score"
    fields = {name: compile_expression(e, BROADCAST) for name, e in project.map.fields.items()}
    flagged = compile_expression(flag.map, BROADCAST)
    is_alert = compile_expression(branch.branch[0].when, BROADCAST)
    s = fraud.generate(3000, n_customers=300, seed=13)
    oracle = fraud.expected(s.transactions, s.customers, rules, load_model(model_file[0]))
    rules_state(rules)
    reasons = Counter()
    for key, value in fraud.enrich(s.transactions, s.customers):
        scored = fraud_scoring.score(key, value)
        out = {name: f(key, scored, scored["ts"]) for name, f in fields.items()}
        out = flagged(key, out, out["ts"])
        assert out == oracle[value["txn_id"]]
        assert bool(is_alert(key, out, 0)) == out["flagged"]
        reasons.update(out["reasons"])
    expect_reasons = {"high_score", "blocked_country", "over_limit"}
    if rules.get("max_amount", 1) is None:
        expect_reasons.discard("over_limit")
    if not rules:
        expect_reasons = {"high_score"}
    assert set(reasons) == expect_reasons, reasons


def test_a_lower_threshold_flags_more(model_file):
    from processor.examples.fraud_model import load_model

    s = fraud.generate(2000, n_customers=200, seed=21)
    model = load_model(model_file[0])
    strict = fraud.expected(s.transactions, s.customers, fraud.DEFAULT_RULES, model)
    lax = fraud.expected(s.transactions, s.customers,
                         {**fraud.DEFAULT_RULES, "threshold": {"min_score": 0.5}}, model)
    flagged = {k for k, v in strict.items() if v["flagged"]}
    assert flagged < {k for k, v in lax.items() if v["flagged"]}
    precision = sum(s.labels[k] for k in flagged) / len(flagged)
    assert precision > 0.5  # the model finds fraud, not noise


# --- demo ---------------------------------------------------------------------------------------

def test_demo_command_takes_an_example():
    from processor.cli import build_parser

    assert build_parser().parse_args(["demo"]).example == "revenue"
    args = build_parser().parse_args(["demo", "--example", "fraud", "--rate", "50"])
    assert (args.example, args.rate) == ("fraud", 50)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--example", "nope"])


def test_demo_pacing_keeps_each_topics_order(monkeypatch):
    from processor.tools import demo_views as demos

    monkeypatch.setattr(demos.time, "sleep", lambda s: None)
    s = reconciliation.generate(300, seed=2, partitions=4)
    merged = list(demos._paced({"orders": s.orders, "payments": s.payments}, T0, 1e9))
    assert [r for t, r in merged if t == "orders"] == s.orders
    assert [r for t, r in merged if t == "payments"] == s.payments

