"""Seeded input and brute-force oracles for the join tests (test_joins.py).

Streams: `orders` (keyed by customer, co-partitioned with the `customers` table), `payments`
and `shipments` (keyed by order id); tables `customers` (per task) and `countries` (global).
Event time: orders every STEP ms, payments and shipments within +-SPREAD of their order, each
topic produced in a noisy time order so every partition is out of order by less than OOO (the
sources' max_out_of_orderness): no record is ever late, and at the join task the watermark never
passes the time of a record that has not arrived yet. Hence, for the data below, what every join
emits does not depend on how the inputs interleave:

- interval join: the pairs within [t - before, t + after] of the same `ref` (payments are
  placed exactly on and 1 ms outside some orders' bounds), and (left/outer) the unmatched
  records, once every interval closed;
- reconcile: every order id's records lie within 2 * SPREAD < TIMEOUT of each other, so each
  group is complete or not whatever arrives first. Repeated payments occur only for order ids
  without an order (orphans): a group that completes with a repeat would depend on the arrival
  order of two topics (the repeat lands before or after the completing record).

Sentinels at END (one per partition of every stream) move every watermark past every interval
and timeout; they carry order ids / refs starting with `end-`, which the oracles leave out.
"""

from __future__ import annotations

import heapq
import random
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import Producer

from processor.tools.generator import create_topic, produce_json
from tests.integration.kafka import read_all

T0 = 1_700_000_000_000
STEP = 10           # ms between two orders
SPREAD = 3_000      # payments/shipments lie within +-SPREAD of their order
NOISE = 900         # production order = time order +- NOISE: out of order by < 2 * NOISE
OOO = 2_000         # the sources' max_out_of_orderness (> 2 * NOISE)
TIMEOUT = 10_000    # reconcile timeout (> 2 * SPREAD)
BEFORE, AFTER = 1_000, 2_000  # interval join bounds
END_PREFIX = "end-"
COUNTRIES = ["DE", "FR", "US", "JP", "BR", "XX"]  # XX never in the table, BR deleted at the end
PARTITIONS = {  # orders and customers co-partitioned; the joined streams differ
    "orders": 3, "payments": 2, "shipments": 4, "customers": 3, "countries": 2}

Rec = tuple[str, dict[str, Any]]
Out = Counter  # Counter[(key, canonical JSON value)]


def canon(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _noisy_time_order(records: list[Rec], rng: random.Random) -> list[Rec]:
    return sorted(records, key=lambda r: r[1]["ts"] + rng.randint(-NOISE, NOISE))


@dataclass
class JoinData:
    orders: list[Rec] = field(default_factory=list)
    payments: list[Rec] = field(default_factory=list)
    shipments: list[Rec] = field(default_factory=list)
    customers: list[tuple[str, dict[str, Any] | None]] = field(default_factory=list)
    countries: list[tuple[str, dict[str, Any] | None]] = field(default_factory=list)

    @property
    def end(self) -> int:
        return max(v["ts"] for _, v in self.orders + self.payments + self.shipments) + 3_600_000


def generate(n_orders: int, seed: int, *, refs: int = 150, customers: int = 40) -> JoinData:
    rng = random.Random(seed)
    d = JoinData()
    for i in range(n_orders):
        ts = T0 + i * STEP
        oid = f"o{i}"
        order = {"order_id": oid, "customer": f"c{rng.randrange(customers)}",
                 "country": rng.choice(COUNTRIES), "ref": f"r{rng.randrange(refs)}",
                 "amount": rng.randrange(1, 500), "ts": ts}
        d.orders.append((order["customer"], order))
        pattern = rng.choices(["match", "mismatch", "none"], weights=[6, 2, 2])[0]
        if pattern != "none":
            amount = order["amount"] + (pattern == "mismatch")
            ref = order["ref"] if rng.random() < 0.8 else f"r{rng.randrange(refs)}"
            d.payments.append((oid, {"pay_id": f"p{i}", "order_id": oid, "ref": ref,
                                     "amount": amount, "ts": ts + rng.randint(-SPREAD, SPREAD)}))
        if rng.random() < 0.7:
            d.shipments.append((oid, {"ship_id": f"s{i}", "order_id": oid,
                                      "ts": ts + rng.randint(-SPREAD, SPREAD)}))
        if i % 10 == 5:  # an orphan payment: no order
            xid = f"x{i}"
            d.payments.append((xid, {"pay_id": f"px{i}", "order_id": xid,
                                     "ref": f"r{rng.randrange(refs)}", "amount": 7,
                                     "ts": ts + rng.randint(-SPREAD, SPREAD)}))
        if i % 50 == 0:  # payments exactly on and just outside the interval's bounds
            for n, dt in enumerate((-BEFORE, AFTER, -BEFORE - 1, AFTER + 1)):
                bid = f"b{i}-{n}"
                d.payments.append((bid, {"pay_id": f"pb{i}-{n}", "order_id": bid,
                                         "ref": order["ref"], "amount": 3, "ts": ts + dt}))
        if i % 10 == 8:  # an orphan paid twice (same key, same partition: the latest wins)
            yid = f"y{i}"
            t = ts + rng.randint(-SPREAD, 0)
            for n, dt in enumerate((0, rng.randint(1, SPREAD))):
                d.payments.append((yid, {"pay_id": f"py{i}-{n}", "order_id": yid,
                                         "ref": f"r{rng.randrange(refs)}", "amount": 10 + n,
                                         "ts": t + dt}))
            if rng.random() < 0.5:
                d.shipments.append((yid, {"ship_id": f"sy{i}", "order_id": yid,
                                          "ts": t + rng.randint(0, SPREAD)}))
    d.orders = _noisy_time_order(d.orders, rng)
    d.payments = _noisy_time_order(d.payments, rng)
    d.shipments = _noisy_time_order(d.shipments, rng)
    # customers c0..c33 exist, several versions each; every 7th is deleted; c34.. never exist
    for version in range(3):
        for c in range(customers - 6):
            d.customers.append((f"c{c}", {"name": f"cust{c}", "tier": (c + version) % 4,
                                          "version": version}))
    d.customers += [(f"c{c}", None) for c in range(0, customers - 6, 7)]
    d.customers.append(("c7", {"name": "cust7", "tier": 9, "version": 3}))  # back after delete
    for version in range(3):
        for code in COUNTRIES[:5]:
            d.countries.append((code, {"code": code, "vat": 10 + version}))
    d.countries.append(("BR", None))
    return d


def create_topics(bootstrap: str, topics: dict[str, str]) -> None:
    for role, topic in topics.items():
        create_topic(bootstrap, topic, PARTITIONS[role])


def produce(bootstrap: str, topics: dict[str, str], d: JoinData, *, sentinels: bool = True) -> None:
    """Tables first, then the streams, then (unless told not to) the sentinels."""
    for role in ("customers", "countries"):
        if role in topics:
            _produce_table(bootstrap, topics[role], getattr(d, role))
    for role in ("orders", "payments", "shipments"):
        if role in topics:
            produce_json(bootstrap, topics[role], getattr(d, role))
    if sentinels:
        produce_sentinels(bootstrap, topics, d)


def produce_interleaved(bootstrap: str, topics: dict[str, str], d: JoinData,
                        rate_per_s: float) -> None:
    """The streams as a live source would write them: one merged flow in (noisy) time order at
    `rate_per_s`, each topic's records in their list order."""
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "partitioner": "murmur2_random",
                  "enable.idempotence": True})
    flows = [[(v["ts"], topics[role], k, v) for k, v in getattr(d, role)]
             for role in ("orders", "payments", "shipments") if role in topics]
    started = time.monotonic()
    for n, (_, topic, key, value) in enumerate(heapq.merge(*flows, key=lambda r: r[0])):
        p.produce(topic, orjson.dumps(value), key.encode())
        if n % 200 == 0:
            p.poll(0)
            ahead = n / rate_per_s - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
    assert p.flush(30) == 0


def produce_sentinels(bootstrap: str, topics: dict[str, str], d: JoinData) -> None:
    """One record at END on every partition of every stream: every watermark passes every
    interval and timeout of the data."""
    end = d.end
    for role in ("orders", "payments", "shipments"):
        if role in topics:
            produce_json(bootstrap, topics[role], [
                (f"{END_PREFIX}{p}", {"order_id": f"{END_PREFIX}{role}{p}", "pay_id": "end",
                                      "ship_id": "end", "customer": "end", "country": "XX",
                                      "ref": f"{END_PREFIX}ref", "amount": 0, "ts": end}, p)
                for p in range(PARTITIONS[role])])


def _produce_table(bootstrap: str, topic: str, rows: list[tuple[str, Any]]) -> None:
    # the partitioner produce_json uses (murmur2, as Java clients): keys co-partition with orders
    p = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random",
                  "enable.idempotence": True})
    for key, value in rows:
        p.produce(topic, None if value is None else orjson.dumps(value), key.encode())
    assert p.flush(30) == 0


# -- oracles ---------------------------------------------------------------------------------

def _table(rows: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in rows:
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def table_join_oracles(d: JoinData) -> dict[str, Out]:
    customers, countries = _table(d.customers), _table(d.countries)
    inner: Out = Counter()
    left: Out = Counter()
    glob: Out = Counter()
    for key, o in d.orders:
        c, n = customers.get(key), countries.get(o["country"])
        if c is not None:
            inner[(key, canon({**o, "customer": c}))] += 1
        left[(key, canon({**o, "customer": c, "country_row": n}))] += 1
        if n is not None:
            glob[(key, canon({**o, "country_row": n}))] += 1
    return {"table_inner": inner, "table_left": left, "global_inner": glob}


def interval_oracle(d: JoinData, kind: str) -> Out:
    lefts: dict[str, list[dict[str, Any]]] = {}
    rights: dict[str, list[dict[str, Any]]] = {}
    for _, o in d.orders:
        lefts.setdefault(o["ref"], []).append(o)
    for _, p in d.payments:
        rights.setdefault(p["ref"], []).append(p)
    out: Out = Counter()
    for ref in lefts.keys() | rights.keys():
        ls, rs = lefts.get(ref, []), rights.get(ref, [])
        matched_r: set[int] = set()
        for lv in ls:
            hit = False
            for j, rv in enumerate(rs):
                if lv["ts"] - BEFORE <= rv["ts"] <= lv["ts"] + AFTER:
                    out[(ref, canon({"orders": lv, "payments": rv}))] += 1
                    hit = True
                    matched_r.add(j)
            if not hit and kind != "inner":
                out[(ref, canon({"orders": lv, "payments": None}))] += 1
        if kind == "outer":
            for j, rv in enumerate(rs):
                if j not in matched_r:
                    out[(ref, canon({"orders": None, "payments": rv}))] += 1
    return out


def reconcile_oracle(sides: dict[str, list[Rec]]) -> Out:
    """Groups by order id; every side's latest record in topic order (same key, same partition).
    Every group is closed by the sentinels' watermark."""
    names = list(sides)
    groups: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for name, recs in sides.items():
        for _, v in recs:
            groups.setdefault(v["order_id"], {}).setdefault(name, []).append(v)
    out: Out = Counter()
    for oid, g in groups.items():
        values = {n: g[n][-1] if n in g else None for n in names}
        repeats = {n: len(g[n]) - 1 for n in names if len(g.get(n, [])) > 1}
        missing = [n for n in names if values[n] is None]
        if missing:
            status = "incomplete"
        else:
            assert not repeats, f"scenario bug: complete group {oid} with repeats is order-dependent"
            status = ("mismatched" if values["orders"]["amount"] != values["payments"]["amount"]
                      else "matched")
        result = {"key": oid, "status": status, "missing": missing, **values}
        if repeats:
            result["repeats"] = repeats
        out[(oid, canon(result))] += 1
    return out


# -- outputs ---------------------------------------------------------------------------------

def is_sentinel(key: str, value: dict[str, Any]) -> bool:
    if key.startswith(END_PREFIX):
        return True
    return str(value.get("order_id", "")).startswith(END_PREFIX)


def outputs(bootstrap: str, topic: str) -> Out:
    got: Out = Counter()
    for k, v, _ in read_all(bootstrap, topic):
        key, value = k.decode(), orjson.loads(v)
        if not is_sentinel(key, value):
            got[(key, canon(value))] += 1
    return got


def diff(got: Out, want: Out, what: str) -> str:
    missing = want - got
    extra = got - want
    if not missing and not extra:
        return ""

    def show(c: Out) -> list[str]:
        return [f"{n}x {k} {v[:300]}" for (k, v), n in list(c.items())[:4]]

    return (f"{what}: {sum(want.values())} records expected, {sum(got.values())} got; "
            f"{sum(missing.values())} missing, e.g. {show(missing)}; "
            f"{sum(extra.values())} unexpected, e.g. {show(extra)}")


def distinct(c: Out) -> set[tuple[str, str]]:
    return set(c)


# -- topology --------------------------------------------------------------------------------

PIPELINES: dict[str, str] = {
    "table_inner": """
  - from: orders
    steps:
      - join: {{table: customers, type: inner, as: customer}}
      - to: {{topic: {out}, partitions: 2}}""",
    "table_left": """
  - from: orders
    steps:
      - join: {{table: customers, type: left, as: customer}}
      - join: {{table: countries, key: "value['country']", type: left, as: country_row}}
      - to: {{topic: {out}, partitions: 2}}""",
    "global_inner": """
  - from: orders
    steps:
      - join: {{table: countries, key: "value['country']", as: country_row}}
      - to: {{topic: {out}, partitions: 2}}""",
    **{f"interval_{kind}": f"""
  - from: orders
    steps:
      - key_by: "value['ref']"
      - interval_join: {{{{with: payments, before: {BEFORE}ms, after: {AFTER}ms, type: {kind},
                         key: "value['ref']"}}}}
      - to: {{{{topic: {{out}}, partitions: 2}}}}""" for kind in ("inner", "left", "outer")},
    "reconcile2": f"""
  - from: orders
    steps:
      - key_by: "value['order_id']"
      - reconcile:
          with: [payments]
          keys: {{{{payments: "value['order_id']"}}}}
          timeout: {TIMEOUT}ms
          mismatch: "value['orders']['amount'] != value['payments']['amount']"
      - to: {{{{topic: {{out}}, partitions: 2}}}}""",
    # two outputs: matched / everything else
    "reconcile3": f"""
  - from: orders
    steps:
      - key_by: "value['order_id']"
      - reconcile:
          with: [payments, shipments]
          keys: {{{{payments: "value['order_id']", shipments: "value['order_id']"}}}}
          timeout: {TIMEOUT}ms
          mismatch: "value['orders']['amount'] != value['payments']['amount']"
      - branch:
          - when: "value['status'] == 'matched'"
            steps: [{{{{to: {{{{topic: {{out}}, partitions: 2}}}}}}}}]
          - default: [{{{{to: {{{{topic: {{out2}}, partitions: 3}}}}}}}}]""",
}


def topology_yaml(name: str, topics: dict[str, str], outs: dict[str, str],
                  pipelines: Iterable[str]) -> str:
    ts = f"timestamp: {{field: ts}}, watermark: {{max_out_of_orderness: {OOO}ms}}"
    lines = [f"name: {name}", "sources:"]
    for role in ("orders", "payments", "shipments"):
        if role in topics:
            lines.append(f"  {role}: {{topic: {topics[role]}, {ts}}}")
    if "customers" in topics:
        lines.append(f"  customers: {{topic: {topics['customers']}, kind: table}}")
    if "countries" in topics:
        lines.append(f"  countries: {{topic: {topics['countries']}, kind: global_table}}")
    lines.append("pipelines:")
    text = "\n".join(lines)
    for p in pipelines:
        text += PIPELINES[p].format(out=outs[p], out2=outs.get(f"{p}_other", ""))
    return text + "\n"


def oracles(d: JoinData, pipelines: Iterable[str]) -> dict[str, Out]:
    want: dict[str, Out] = {}
    tables = table_join_oracles(d)
    for p in pipelines:
        if p in tables:
            want[p] = tables[p]
        elif p.startswith("interval_"):
            want[p] = interval_oracle(d, p.removeprefix("interval_"))
        elif p == "reconcile2":
            want[p] = reconcile_oracle({"orders": d.orders, "payments": d.payments})
        elif p == "reconcile3":
            every = reconcile_oracle({"orders": d.orders, "payments": d.payments,
                                     "shipments": d.shipments})
            want[p] = Counter({kv: n for kv, n in every.items()
                               if orjson.loads(kv[1])["status"] == "matched"})
            want[f"{p}_other"] = every - want[p]
    return want


def output_topics(unique: str, pipelines: Iterable[str]) -> dict[str, str]:
    outs = {}
    for p in pipelines:
        outs[p] = f"j-{p.replace('_', '-')}-{unique}"
        if p == "reconcile3":
            outs[f"{p}_other"] = f"j-{p}-other-{unique}"
    return outs
