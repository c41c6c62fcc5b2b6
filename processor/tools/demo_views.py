"""The live views of `processor demo --example revenue|reconciliation|fraud` (the harness that
runs them: tools/demo.py).

A view names its topology and topics, prepares what must exist before the worker starts
(tables, rules, a trained model), feeds input in a thread, and prints a summary of the output
records it is shown. All feed seeded generators (processor.examples.*), so two runs of the
reconciliation and fraud examples print the same story.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter, deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import orjson
from confluent_kafka import Producer

from processor.examples import fraud, reconciliation
from processor.examples.revenue import sample_orders
from processor.runtime.kafka.client_log import CLIENT_LOG
from processor.tools.generator import produce_json

TOPOLOGIES = Path(__file__).resolve().parents[2] / "topologies"
EXAMPLES = ("revenue", "reconciliation", "fraud")
DEFAULT_RATES = {"revenue": 2000, "reconciliation": 500, "fraud": 200}
SPEEDUP = 60  # reconciliation: one second of the clock is one minute of event time


class DemoView:
    """What the demo harness asks of a view; `received` = output records shown so far (the demo
    fails when it stays 0)."""

    topology: ClassVar[Path]
    topics: ClassVar[dict[str, int]]  # topic -> partitions, created before the worker starts
    outputs: ClassVar[tuple[str, ...]]  # the topics read back and shown
    received: int = 0

    @property
    def worker_env(self) -> dict[str, str]:
        """Extra environment of the worker subprocess."""
        return {}

    def banner(self) -> str:
        raise NotImplementedError

    def prepare(self, bootstrap: str) -> None:
        """Produce what must exist before the worker starts (tables, rules)."""

    def feed(self, bootstrap: str) -> None:
        raise NotImplementedError

    def on_output(self, topic: str, key: bytes | None, value: Any) -> None:
        raise NotImplementedError

    def tick(self, bootstrap: str, elapsed: float) -> None:
        """Print the summary (every 2 s)."""
        raise NotImplementedError


def make_view(example: str, seconds: float, rate: float) -> DemoView:
    if example == "revenue":
        return RevenueView(seconds, rate)
    if example == "reconciliation":
        return ReconciliationView(seconds, rate)
    if example == "fraud":
        from processor.examples.fraud_model import ENV_VAR

        env = os.environ.get(ENV_VAR)
        model = Path(env) if env else TOPOLOGIES / "models" / "fraud_model.joblib"
        return FraudView(seconds, rate, model)
    raise ValueError(f"unknown example {example!r} (known: {', '.join(EXAMPLES)})")


def _paced(streams: dict[str, list[Any]], start_ms: int, speedup: float) -> Iterator[tuple[str, Any]]:
    """(topic, record) of several topics merged by when each is due: a record is due at its
    topic's largest event time so far (an out-of-order record goes right after the record it
    follows), mapped to the clock as `(ts - start_ms) / speedup` seconds after the start."""
    pending = []
    for topic, records in streams.items():
        high = start_ms
        for n, record in enumerate(records):
            high = max(high, record[1]["ts"])
            pending.append(((high - start_ms) / 1000 / speedup, topic, n, record))
    pending.sort(key=lambda p: (p[0], p[1], p[2]))
    started = time.monotonic()
    for due, topic, _, record in pending:
        ahead = due - (time.monotonic() - started)
        if ahead > 0:
            time.sleep(ahead)
        yield topic, record


def replay(bootstrap: str, streams: dict[str, list[Any]], start_ms: int, speedup: float) -> int:
    """Produce `(key, value, partition | None)` records of several topics in event-time pace,
    keeping each topic's own order (and with it the generator's deliberate disorder)."""
    producer = Producer({"bootstrap.servers": bootstrap, "logger": CLIENT_LOG, "linger.ms": 5,
                         "partitioner": "murmur2_random",
                         "enable.idempotence": True})  # order kept across retries
    n = 0
    for topic, (key, value, partition) in _paced(streams, start_ms, speedup):
        where = {} if partition is None else {"partition": partition}
        while True:
            try:
                producer.produce(topic, orjson.dumps(value), key.encode(), **where)
                break
            except BufferError:
                producer.poll(0.05)
        n += 1
        if n % 100 == 0:
            producer.poll(0)
    producer.flush(60)
    return n


def _producible(records: list[Any]) -> list[tuple[Any, ...]]:
    """Records as produce_json takes them: a partition of None means "the producer's choice"."""
    return [(k, v) if p is None else (k, v, p) for k, v, p in records]


def _money(value: Any) -> str:
    return "-" if value is None else f"{value['amount']:.2f}"


class RevenueView(DemoView):
    """Random orders stamped with the current time; the top users by revenue."""

    topology = TOPOLOGIES / "revenue_per_user.yaml"
    topics = {"orders": 4, "revenue-per-user": 4}
    outputs = ("revenue-per-user",)

    def __init__(self, seconds: float, rate: float) -> None:
        self.seconds, self.rate = seconds, rate
        self.totals: dict[str, dict] = {}
        self.received = 0

    def banner(self) -> str:
        return f"generator: {int(self.seconds * self.rate)} orders at {self.rate:.0f}/s"

    def feed(self, bootstrap: str) -> None:
        produce_json(bootstrap, "orders", sample_orders(int(self.seconds * self.rate)),
                     rate_per_s=self.rate, stamp_now=True)

    def on_output(self, topic: str, key: bytes | None, value: Any) -> None:
        self.totals[key.decode() if key else ""] = value
        self.received += 1

    def tick(self, bootstrap: str, elapsed: float) -> None:
        if not self.totals:
            return
        top = sorted(self.totals.values(), key=lambda r: -r["revenue"])[:8]
        print(f"\n[{elapsed:5.1f}s] {self.received} updates on topic revenue-per-user, "
              f"{len(self.totals)} users; top by revenue:")
        print(f"  {'user':<6} {'orders':>6} {'revenue':>11} {'avg':>8} {'largest':>8}  country")
        for r in top:
            print(f"  {r['user']:<6} {r['orders']:>6} {r['revenue']:>11.2f} {r['avg_order']:>8.2f} "
                  f"{r['largest']:>8.2f}  {r['country']}")
        sys.stdout.flush()


class ReconciliationView(DemoView):
    """Orders and payments at `rate` orders/s, event time 60x the clock (so the 10-minute
    timeout takes 10 s); counts results by status, shows the latest discrepancies."""

    topology = TOPOLOGIES / "reconciliation.yaml"
    topics = {"orders": 4, "payments": 4, "reconciled": 4, "discrepancies": 4}
    outputs = ("reconciled", "discrepancies")

    def __init__(self, seconds: float, rate: float) -> None:
        self.start_ms = int(time.time() * 1000)
        interval = max(int(SPEEDUP * 1000 / rate), 1)
        self.sample = reconciliation.generate(
            max(int(seconds * rate), 10), seed=42, start_ms=self.start_ms, interval_ms=interval,
            out_of_order_share=0.01 if interval < 2_000 else 0.0, partitions=4)
        # every group the worker reports must be exactly the oracle's (any watermark will do:
        # the groups it has not closed yet are simply not reported)
        self.oracle = reconciliation.expected(self.sample.orders, self.sample.payments, 1 << 62)
        self.statuses: Counter[str] = Counter()
        self.last: deque[dict[str, Any]] = deque(maxlen=5)
        self.received = self.differ = self.printed = 0

    def banner(self) -> str:
        s = self.sample
        return (f"generator: {len(s.orders)} orders, {len(s.payments)} payments "
                f"({len(s.mismatched)} with a wrong amount, {len(s.missing)} orders unpaid, "
                f"{len(s.orphans)} payments without order, {len(s.duplicated)} sent twice, "
                f"{sum(s.out_of_order.values())} out of order); event time runs {SPEEDUP}x the "
                "clock: an unmatched record is reported ~10 s after it was sent")

    def feed(self, bootstrap: str) -> None:
        replay(bootstrap, {"orders": self.sample.orders, "payments": self.sample.payments},
               self.start_ms, SPEEDUP)

    def on_output(self, topic: str, key: bytes | None, value: Any) -> None:
        self.received += 1
        self.statuses[value["status"]] += 1
        self.differ += value != self.oracle.get(value["key"])
        if value["status"] != "matched":
            self.last.append(value)

    def tick(self, bootstrap: str, elapsed: float) -> None:
        if self.received == self.printed:
            return
        self.printed = self.received
        c = self.statuses
        check = (f"{self.differ} DIFFER from the oracle" if self.differ
                 else "all as the oracle expects")
        print(f"\n[{elapsed:5.1f}s] {self.received} groups reported ({check}): {c['matched']} "
              f"matched, {c['mismatched']} mismatched, {c['incomplete']} incomplete; "
              "latest discrepancies:")
        for v in self.last:
            extra = f"  missing {', '.join(v['missing'])}" if v["missing"] else ""
            if v.get("repeats"):
                extra += "  repeats " + ", ".join(f"{k} x{n}" for k, n in v["repeats"].items())
            print(f"  {v['key']:<8} {v['status']:<10} order {_money(v['orders']):>8}  "
                  f"payment {_money(v['payments']):>8}{extra}")
        sys.stdout.flush()


class FraudView(DemoView):
    """Customers and rules first, then transactions at `rate`/s; halfway, a rule change lowers
    the score threshold and the alert share rises without restarting anything."""

    topology = TOPOLOGIES / "fraud_detection.yaml"
    topics = {"customers": 4, "transactions": 4, "fraud-rules": 1, "fraud-alerts": 4,
              "transactions-scored": 4}
    outputs = ("fraud-alerts", "transactions-scored")
    LOWER_THRESHOLD = 0.5

    def __init__(self, seconds: float, rate: float, model_path: Path) -> None:
        self.seconds, self.rate, self.model_path = seconds, rate, model_path
        self.sample = fraud.generate(max(int(seconds * rate), 10), seed=2024)
        self.counts: Counter[str] = Counter()
        self.at_change: Counter[str] | None = None
        self.last: deque[dict[str, Any]] = deque(maxlen=5)
        self.received = self.printed = 0

    @property
    def worker_env(self) -> dict[str, str]:
        from processor.examples.fraud_model import ENV_VAR

        return {ENV_VAR: str(self.model_path)}

    def banner(self) -> str:
        rules = ", ".join(f"{k} {orjson.dumps(v).decode()}" for k, v in fraud.DEFAULT_RULES.items())
        return (f"generator: {len(self.sample.customers)} customers, "
                f"{len(self.sample.transactions)} transactions at {self.rate:.0f}/s; rules: {rules}")

    def prepare(self, bootstrap: str) -> None:
        from processor.examples.fraud_model import train_fraud_model

        if not self.model_path.is_file():
            print(f"no model at {self.model_path}: training one (first run only)...")
            m = train_fraud_model(self.model_path)
            print(f"trained in {m['seconds']:.1f} s, held-out ROC AUC {m['roc_auc']:.4f}")
        produce_json(bootstrap, "customers", _producible(self.sample.customers))
        produce_json(bootstrap, "fraud-rules", _producible(fraud.rule_records()))

    def feed(self, bootstrap: str) -> None:
        produce_json(bootstrap, "transactions", _producible(self.sample.transactions),
                     rate_per_s=self.rate, stamp_now=True)

    def on_output(self, topic: str, key: bytes | None, value: Any) -> None:
        self.received += 1
        self.counts[topic] += 1
        if topic == "fraud-alerts":
            self.last.append(value)

    def tick(self, bootstrap: str, elapsed: float) -> None:
        if self.at_change is None and elapsed >= self.seconds / 2:
            old = fraud.DEFAULT_RULES["threshold"]["min_score"]
            produce_json(bootstrap, "fraud-rules", [("threshold", {"min_score": self.LOWER_THRESHOLD})])
            self.at_change = Counter(self.counts)
            print(f"\n[{elapsed:5.1f}s] >>> rule change published on fraud-rules: threshold "
                  f"min_score {old} -> {self.LOWER_THRESHOLD}; the worker applies it from its "
                  "next records, no restart")
        if self.received == self.printed:
            return
        self.printed = self.received
        alerts, scored = self.counts["fraud-alerts"], self.counts["transactions-scored"]
        line = (f"\n[{elapsed:5.1f}s] {alerts + scored} transactions scored, {alerts} alerts "
                f"({alerts / (alerts + scored):.1%})")
        if self.at_change is not None:
            a = alerts - self.at_change["fraud-alerts"]
            n = a + scored - self.at_change["transactions-scored"]
            line += f"; since the rule change: {a} of {n}" + (f" ({a / n:.1%})" if n else "")
        print(line + "; latest alerts:")
        for v in self.last:
            print(f"  {v['txn_id']:<7} {v['customer_id']:<6} {v['amount']:>9.2f} {v['country']} "
                  f"{v['hour']:02d}h {v['merchant_category']:<13} score {v['score']:.4f}  "
                  f"{', '.join(v['reasons'])}")
        sys.stdout.flush()

