"""The fault campaign's topology, input (data and feeder) and checker (engine: campaign.py).

One topology covers the stateful paths a fault can break: a running aggregate after a
repartition (`totals`), tumbling emit-final windows after a repartition (`gmv`), and an inner
interval join of two topics with different partition counts (`joined`). The input is the join
tests' seeded data (tests/integration/joins_scenario.py): every partition is out of order by
less than the sources' `max_out_of_orderness`, so no record is ever late and every output is a
function of the input alone — whatever crashed, paused or rebalanced in between.

Each output is checkable for loss and for duplication:
- totals: each emission carries the key's running `orders` count, so under exactly_once the
  counts of a key must strictly increase; the highest emission must equal the oracle.
- gmv: each window is emitted once under exactly_once, at least once with the same value
  under at_least_once.
- joined: an exact multiset (each pair once under exactly_once, at least once otherwise).
"""

from __future__ import annotations

import heapq
import threading
import time
from bisect import bisect_left, bisect_right
from collections import Counter
from typing import Any

import orjson
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from tests.integration import joins_scenario as js
from tests.integration.kafka import read_all

Rec = tuple[str, dict[str, Any]]

TOPOLOGY = """\
name: {name}
sources:
  orders: {{topic: {orders}, timestamp: {{field: ts}}, watermark: {{max_out_of_orderness: {ooo}ms}}}}
  payments: {{topic: {payments}, timestamp: {{field: ts}}, watermark: {{max_out_of_orderness: {ooo}ms}}}}
pipelines:
  - from: orders
    steps:
      - filter: "value['amount'] > 0"
      - key_by: "value['customer']"
      - aggregate:
          store: totals
          orders: count()
          revenue: sum(value['amount'])
          largest: max(value['amount'])
      - map: {{fields: {{customer: key, orders: "value['orders']", revenue: "value['revenue']",
                        largest: "value['largest']"}}}}
      - to: {{topic: {totals}, partitions: 4}}
  - from: orders
    steps:
      - key_by: "value['country']"
      - window: {{tumbling: 1s, emit: final, late: {{topic: {late}, partitions: 1}}}}
      - aggregate:
          store: gmv
          orders: count()
          gmv: sum(value['amount'])
      - map: {{fields: {{country: key, second: "value['window_start']", orders: "value['orders']",
                        gmv: "value['gmv']"}}}}
      - to: {{topic: {gmv}, partitions: 2}}
  - from: orders
    steps:
      - key_by: "value['ref']"
      - interval_join: {{with: payments, before: {before}ms, after: {after}ms, type: inner,
                         key: "value['ref']"}}
      - to: {{topic: {joined}, partitions: 2}}
"""

OUTPUTS = ("totals", "gmv", "joined")


def topics(unique: str) -> dict[str, str]:
    return {role: f"camp-{role}-{unique}"
            for role in ("orders", "payments", *OUTPUTS, "late")}


def topology_yaml(name: str, t: dict[str, str]) -> str:
    return TOPOLOGY.format(name=name, ooo=js.OOO, before=js.BEFORE, after=js.AFTER, **t)


def input_data(n_orders: int, seed: int) -> js.JoinData:
    """Orders keyed by order id (so `key_by customer` really moves them), payments by order id."""
    d = js.generate(n_orders, seed, refs=300, customers=200)
    d.orders = [(o["order_id"], o) for _, o in d.orders]
    return d


class Feeder(threading.Thread):
    """Produces the input in (noisy) event-time order at a steady rate until stopped. What was
    sent is a prefix of each topic's list: the oracle's input."""

    def __init__(self, bootstrap: str, topics: dict[str, str], data: js.JoinData,
                 rate: float) -> None:
        super().__init__(name="campaign-feeder", daemon=True)
        self.bootstrap, self.topics, self.data, self.rate = bootstrap, topics, data, rate
        self.sent = {"orders": 0, "payments": 0}
        self.errors: list[str] = []
        self.exhausted = False
        self.halt = threading.Event()

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is not None and len(self.errors) < 20:
            self.errors.append(f"delivery to {msg.topic()} failed: {err.str()}")

    def run(self) -> None:
        p = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 5,
                      "enable.idempotence": True, "partitioner": "murmur2_random",
                      "queue.buffering.max.messages": 1_000_000, "on_delivery": self._delivered})
        flows = [[(v["ts"], role, k, v) for k, v in getattr(self.data, role)]
                 for role in ("orders", "payments")]
        started = time.monotonic()
        try:
            for n, (_, role, key, value) in enumerate(heapq.merge(*flows, key=lambda r: r[0])):
                if self.halt.is_set():
                    break
                while True:
                    try:
                        p.produce(self.topics[role], orjson.dumps(value), key.encode())
                        break
                    except BufferError:
                        p.poll(0.1)
                self.sent[role] += 1
                if n % 50 == 0:
                    p.poll(0)
                    ahead = n / self.rate - (time.monotonic() - started)
                    if ahead > 0:
                        self.halt.wait(ahead)
            else:
                self.exhausted = True
            left = p.flush(300)
            if left:
                self.errors.append(f"{left} input records not delivered within 300 s")
        except Exception as exc:  # a fatal producer error: the report says so
            self.errors.append(f"feeder failed: {exc!r}")


# -- oracles -----------------------------------------------------------------------------------

def totals_oracle(orders: list[Rec]) -> dict[str, tuple[int, int, int]]:
    acc: dict[str, tuple[int, int, int]] = {}
    for _, o in orders:
        if o["amount"] > 0:
            n, rev, big = acc.get(o["customer"], (0, 0, 0))
            acc[o["customer"]] = (n + 1, rev + o["amount"], max(big, o["amount"]))
    return acc


def gmv_oracle(orders: list[Rec]) -> dict[tuple[str, int], tuple[int, int]]:
    acc: dict[tuple[str, int], tuple[int, int]] = {}
    for _, o in orders:
        w = (o["country"], o["ts"] // 1000 * 1000)
        n, gmv = acc.get(w, (0, 0))
        acc[w] = (n + 1, gmv + o["amount"])
    return acc


def joined_oracle(orders: list[Rec], payments: list[Rec]) -> Counter[tuple[str, str]]:
    """joins_scenario.interval_oracle(kind='inner'), by bisection: campaigns are long."""
    by_ref: dict[str, list[dict[str, Any]]] = {}
    for _, p in payments:
        by_ref.setdefault(p["ref"], []).append(p)
    times: dict[str, list[int]] = {}
    for ref, ps in by_ref.items():
        ps.sort(key=lambda p: p["ts"])
        times[ref] = [p["ts"] for p in ps]
    out: Counter[tuple[str, str]] = Counter()
    for _, o in orders:
        ts = times.get(o["ref"])
        if ts is None:
            continue
        lo, hi = bisect_left(ts, o["ts"] - js.BEFORE), bisect_right(ts, o["ts"] + js.AFTER)
        for p in by_ref[o["ref"]][lo:hi]:
            out[(o["ref"], js.canon({"orders": o, "payments": p}))] += 1
    return out


# -- checks ------------------------------------------------------------------------------------

class Finding:
    """Per-output figures: emitted, lost, duplicated, and what differs from the oracle."""

    def __init__(self) -> None:
        self.out = self.lost = self.duplicated = 0
        self.diffs: list[str] = []

    def as_dict(self) -> dict[str, Any]:
        return {"out": self.out, "lost": self.lost, "duplicated": self.duplicated,
                "diffs": self.diffs[:10], "n_diffs": len(self.diffs)}


def check_totals(bootstrap: str, topic: str, orders: list[Rec]) -> Finding:
    """Duplicated = emissions whose running count does not exceed the key's previous one;
    lost = orders missing from the highest emission of each key."""
    f = Finding()
    best: dict[str, tuple[int, int, int]] = {}
    last: dict[str, int] = {}
    seen: dict[tuple[str, int], tuple[int, int]] = {}
    for _, value, _ in read_all(bootstrap, topic, timeout=600):
        v = orjson.loads(value)
        key, n = v["customer"], v["orders"]
        f.out += 1
        if n <= last.get(key, 0):
            f.duplicated += 1
        last[key] = n
        if seen.setdefault((key, n), (v["revenue"], v["largest"])) != (v["revenue"], v["largest"]):
            f.diffs.append(f"{key}: two different values for orders={n}")
        if n > best.get(key, (0, 0, 0))[0]:
            best[key] = (n, v["revenue"], v["largest"])
    for key, want in totals_oracle(orders).items():
        got = best.get(key, (0, 0, 0))
        f.lost += max(0, want[0] - got[0])
        if got != want:
            f.diffs.append(f"{key}: (orders, revenue, largest) {got} != oracle {want}")
    f.diffs += [f"{key}: unexpected key" for key in set(best) - set(totals_oracle(orders))]
    return f


def check_gmv(bootstrap: str, topic: str, orders: list[Rec]) -> Finding:
    """Duplicated = emissions of a window beyond its first; lost = orders missing from the
    fullest emission of each window (all of them for a window never emitted)."""
    f = Finding()
    got: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for _, value, _ in read_all(bootstrap, topic, timeout=600):
        v = orjson.loads(value)
        got.setdefault((v["country"], v["second"]), []).append((v["orders"], v["gmv"]))
        f.out += 1
    want = gmv_oracle(orders)
    for window, values in got.items():
        f.duplicated += len(values) - 1
        if window not in want:
            f.diffs.append(f"window {window}: unexpected, emitted {values}")
        elif set(values) != {want[window]}:
            f.diffs.append(f"window {window}: emitted {values}, oracle {want[window]}")
    missing = set(want) - set(got)
    f.lost = sum(max(0, n - max((v[0] for v in got.get(w, [])), default=0))
                 for w, (n, _) in want.items())
    f.diffs += [f"window {w}: never emitted (oracle {want[w]})" for w in sorted(missing)[:20]]
    return f


def check_joined(bootstrap: str, topic: str, want: Counter[tuple[str, str]]) -> Finding:
    f = Finding()
    got: Counter[tuple[str, str]] = Counter()
    for k, v, _ in read_all(bootstrap, topic, timeout=600):  # js.outputs, with a long timeout
        key, value = k.decode(), orjson.loads(v)
        if not js.is_sentinel(key, value):
            got[(key, js.canon(value))] += 1
    f.out = sum(got.values())
    f.lost = sum((want - got).values())
    f.duplicated = sum(n - want[k] for k, n in got.items() if k in want and n > want[k])
    unexpected = [k for k in got if k not in want]
    f.diffs += [f"{f.lost} pairs missing"] if f.lost else []
    f.diffs += [f"unexpected pair {k[0]} {k[1][:200]}" for k in unexpected[:10]]
    return f


def _exists(bootstrap: str, topic: str) -> bool:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    return topic in admin.list_topics(timeout=10).topics


def check(bootstrap: str, t: dict[str, str], orders: list[Rec], payments: list[Rec],
          extra_topics: dict[str, str]) -> dict[str, Any]:
    """The report's record figures; `extra_topics` (late records, dead letters) must be empty."""
    want_joined = joined_oracle(orders, payments)
    findings = {"totals": check_totals(bootstrap, t["totals"], orders),
                "gmv": check_gmv(bootstrap, t["gmv"], orders),
                "joined": check_joined(bootstrap, t["joined"], want_joined)}
    diffs = [f"{name}: {d}" for name, fd in findings.items() for d in fd.diffs]
    for what, topic in extra_topics.items():
        n = len(read_all(bootstrap, topic, timeout=120)) if _exists(bootstrap, topic) else 0
        if n:
            diffs.append(f"{what}: {n} records in {topic}, expected none")
    return {
        "records_in": {"orders": len(orders), "payments": len(payments),
                       "total": len(orders) + len(payments)},
        "records_out": {**{k: fd.out for k, fd in findings.items()},
                        "total": sum(fd.out for fd in findings.values())},
        "lost": {**{k: fd.lost for k, fd in findings.items()},
                 "total": sum(fd.lost for fd in findings.values())},
        "duplicated": {**{k: fd.duplicated for k, fd in findings.items()},
                       "total": sum(fd.duplicated for fd in findings.values())},
        "final_state": {"ok": not diffs, "diffs": diffs[:30], "n_diffs": len(diffs),
                        "oracle": {"customers": len(totals_oracle(orders)),
                                   "windows": len(gmv_oracle(orders)),
                                   "joined_pairs": sum(want_joined.values())}},
        "outputs": {k: fd.as_dict() for k, fd in findings.items()},
    }
