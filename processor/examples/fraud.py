"""Customers, card transactions and rules for topologies/fraud_detection.yaml; the features
the model sees; and the oracle of which transactions the topology flags.

The data has a latent fraud pattern a model can learn: a fixed share of transactions is
fraudulent, and those are drawn from a different distribution — more often abroad, at night,
for large amounts relative to the customer's usual spend, in risky merchant categories, on
young accounts or for customers the bank does not know. Every signal also occurs in honest
traffic, so the model has to combine them (the held-out ROC AUC is ~0.97, not 1).

`features()` is the one definition of the model's input: the training (fraud_model), the
topology's scoring step (topologies/fraud_scoring.py) and the oracle here all call it, so the
oracle's scores are the worker's scores, to the bit.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

Record = tuple[str, Any, int | None]

HOME_COUNTRIES = ("de", "fr", "gb", "us", "es", "it", "nl", "pl")
ABROAD_ONLY = ("br", "th", "ng", "ae", "kp", "ir")  # never a customer's home country
SEGMENTS = ("retail", "premium", "business", "student")
CATEGORIES = ("grocery", "restaurants", "fuel", "pharmacy", "fashion", "travel",
              "entertainment", "electronics", "gift_cards", "crypto")
RISKY_CATEGORIES = frozenset({"electronics", "gift_cards", "crypto"})

# What the topology assumes while a rule is absent from the broadcast topic (the YAML's
# `.get(..., default)`s); publish DEFAULT_RULES to have them explicitly.
RULE_DEFAULTS = {"min_score": 0.8, "countries": (), "limit": 10_000}
DEFAULT_RULES: dict[str, dict[str, Any]] = {
    "threshold": {"min_score": 0.8},
    "blocked_countries": {"countries": ["kp", "ir"]},
    "max_amount": {"limit": 1_000},
}
# A customer the `customers` table does not know (left join gives None) is scored as this.
UNKNOWN_CUSTOMER = {"segment": "unknown", "home_country": None, "account_age_days": 0,
                    "avg_amount": 60.0}

FEATURE_NAMES = (
    "log_amount", "amount_vs_usual", "hour", "night", "abroad", "known_customer",
    "log_account_age", "young_account", "risky_category",
    *(f"category_{c}" for c in CATEGORIES), *(f"segment_{s}" for s in (*SEGMENTS, "unknown")),
)


def features(value: Mapping[str, Any]) -> list[float]:
    """The model's input for an enriched transaction `{..., "customer": {...} | None}`."""
    customer = value.get("customer") or UNKNOWN_CUSTOMER
    known = value.get("customer") is not None
    amount = max(float(value["amount"]), 0.0)
    hour = int(value["hour"]) % 24
    home = customer.get("home_country")
    age = max(float(customer.get("account_age_days") or 0), 0.0)
    usual = float(customer.get("avg_amount") or UNKNOWN_CUSTOMER["avg_amount"])
    category = value.get("merchant_category")
    segment = customer.get("segment") if customer.get("segment") in SEGMENTS else "unknown"
    return [
        math.log1p(amount), amount / max(usual, 1.0), float(hour), float(hour < 6),
        float(known and home is not None and value.get("country") != home), float(known),
        math.log1p(age), float(age < 30), float(category in RISKY_CATEGORIES),
        *(float(category == c) for c in CATEGORIES),
        *(float(segment == s) for s in (*SEGMENTS, "unknown")),
    ]


@dataclass(frozen=True)
class FraudSample:
    """`customers` and `transactions` as records in production order; the ground truth
    (`labels`: txn id -> fraudulent) is for training and metrics, never sent."""

    customers: list[Record]
    transactions: list[Record]
    labels: dict[str, bool]


def generate(n_transactions: int = 5000, *, n_customers: int = 500, seed: int = 7,
             fraud_share: float = 0.03, unknown_customer_share: float = 0.02,
             start_ms: int = 1_700_000_000_000, interval_ms: int = 100,
             partitions: int | None = None) -> FraudSample:
    """Seeded customers (keyed by customer id) and transactions (keyed by the customer id, so
    topic partitions line up with the table's); exactly round(share * n) transactions are
    fraudulent / from unknown customers (ids `n<i>`). `partitions` given: a customer's records
    go to partition `<id digits> % partitions` in both topics; None: the producer's (by key)."""
    rng = random.Random(seed)
    customers: dict[str, dict[str, Any]] = {}
    for i in range(n_customers):
        young = rng.random() < 0.15
        customers[f"c{i}"] = {
            "customer_id": f"c{i}", "segment": rng.choice(SEGMENTS),
            "home_country": rng.choice(HOME_COUNTRIES),
            "account_age_days": rng.randint(0, 29) if young else rng.randint(30, 4000),
            "avg_amount": round(rng.lognormvariate(3.8, 0.6), 2),
        }
    ids = list(customers)
    young_ids = [c for c in ids if customers[c]["account_age_days"] < 30] or ids
    n_fraud = round(fraud_share * n_transactions)
    n_unknown = round(unknown_customer_share * n_transactions)
    fraud = set(rng.sample(range(n_transactions), n_fraud))
    unknown = set(rng.sample(range(n_transactions), n_unknown))
    txns: list[Record] = []
    labels: dict[str, bool] = {}
    for i in range(n_transactions):
        is_fraud = i in fraud
        if i in unknown:
            cid, customer = f"n{i}", None
        else:
            cid = rng.choice(young_ids if is_fraud and rng.random() < 0.4 else ids)
            customer = customers[cid]
        usual = customer["avg_amount"] if customer else UNKNOWN_CUSTOMER["avg_amount"]
        home = customer["home_country"] if customer else rng.choice(HOME_COUNTRIES)
        if is_fraud:
            abroad, night = rng.random() < 0.6, rng.random() < 0.5
            amount = usual * rng.lognormvariate(1.3, 0.9)
            category = rng.choice(sorted(RISKY_CATEGORIES)) if rng.random() < 0.55 \
                else rng.choice(CATEGORIES)
        else:
            abroad, night = rng.random() < 0.08, rng.random() < 0.07
            amount = usual * rng.lognormvariate(0.0, 0.6)
            category = rng.choice(CATEGORIES)
        if abroad:  # fraud goes to far-away countries more often than travellers do
            far = rng.random() < (0.5 if is_fraud else 0.25)
            country = rng.choice(ABROAD_ONLY if far else [c for c in HOME_COUNTRIES if c != home])
        else:
            country = home
        hour = rng.randint(0, 5) if night else rng.randint(6, 23)
        tid = f"t{i}"
        labels[tid] = is_fraud
        txns.append((cid, {"txn_id": tid, "customer_id": cid, "amount": round(amount, 2),
                           "merchant_category": category, "country": country, "hour": hour,
                           "channel": rng.choice(("pos", "online", "online", "atm")),
                           "ts": start_ms + i * interval_ms}, None))
    def part(k: str) -> int | None:
        return None if partitions is None else int(k[1:]) % partitions

    return FraudSample(customers=[(c, v, part(c)) for c, v in customers.items()],
                       transactions=[(k, v, part(k)) for k, v, _ in txns], labels=labels)


def rule_records(rules: Mapping[str, Any] = DEFAULT_RULES) -> list[Record]:
    """Records for the `fraud-rules` broadcast topic: key = rule name, value = its settings
    (None deletes the rule, which then falls back to RULE_DEFAULTS)."""
    return [(name, value, None) for name, value in rules.items()]


def enrich(transactions: Iterable[tuple[Any, ...]],
           customers: Iterable[tuple[Any, ...]]) -> list[tuple[str, dict[str, Any]]]:
    """What the left join with the customers table makes of each transaction, keyed as sent
    (the table is loaded before the transactions: the last value per customer counts)."""
    table = {k: v for k, v, *_ in customers}
    return [(k, {**v, "customer": table.get(k)}) for k, v, *_ in transactions]


def reasons(value: Mapping[str, Any], rules: Mapping[str, Any]) -> list[str]:
    """The YAML's `reasons` expression in Python (same order, same defaults)."""
    min_score = (rules.get("threshold") or {}).get("min_score", RULE_DEFAULTS["min_score"])
    blocked = (rules.get("blocked_countries") or {}).get("countries", RULE_DEFAULTS["countries"])
    limit = (rules.get("max_amount") or {}).get("limit", RULE_DEFAULTS["limit"])
    hits = [("high_score", value["score"] >= min_score),
            ("blocked_country", value["country"] in blocked),
            ("over_limit", value["amount"] > limit)]
    return [name for name, hit in hits if hit]


def output_value(key: str, scored: Mapping[str, Any], rules: Mapping[str, Any]) -> dict[str, Any]:
    """The record the topology writes for a scored transaction (alert or not)."""
    customer = scored.get("customer") or {}
    why = reasons(scored, rules)
    return {"txn_id": scored["txn_id"], "customer_id": key, "amount": scored["amount"],
            "merchant_category": scored["merchant_category"], "country": scored["country"],
            "hour": scored["hour"], "ts": scored["ts"], "segment": customer.get("segment"),
            "score": scored["score"], "reasons": why, "flagged": bool(why)}


def expected(transactions: Iterable[tuple[Any, ...]], customers: Iterable[tuple[Any, ...]],
             rules: Mapping[str, Any], model: Any) -> dict[str, dict[str, Any]]:
    """txn id -> the output value under fixed `rules` ({name: settings}, as the broadcast state
    holds them) and `model` (a fitted classifier, e.g. fraud_model.load_model()): flagged ones
    go to `fraud-alerts`, the others to `transactions-scored`. Scores come from
    fraud_model.score_value, the function the topology's scoring step calls."""
    from processor.examples.fraud_model import score_value

    out: dict[str, dict[str, Any]] = {}
    for key, value in enrich(transactions, customers):
        scored = {**value, "score": score_value(model, value)}
        out[value["txn_id"]] = output_value(key, scored, rules)
    return out
