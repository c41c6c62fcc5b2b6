"""The benchmark's data: seeded input per scenario, produced with progress lines, and the
counts read back from the broker (committed input, output records, changelog end offsets)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from benchmarks.harness import Ctx, WorkerError, progress
from benchmarks.scenarios import Scenario, TopologyInfo, topic_set
from processor.examples.revenue import sample_orders
from processor.tools.generator import create_topic, produce_json_to

# event time of the order_payment input: orders 10 ms apart; each payment within [-1m, +5m]
PAYMENT_OFFSET_MS = (-60_000, 300_000)
# event types of the user_events input (the pattern scenario's a -> b -> c)
EVENT_TYPES, EVENT_WEIGHTS = ("a", "b", "c", "x"), (25, 25, 10, 40)


def sample_customers(n: int, *, seed: int = 11) -> Iterator[tuple[str, dict[str, Any]]]:
    """The customers table: `c0` .. `c<n-1>`, small JSON rows."""
    import random

    rng = random.Random(seed)
    segments = ("retail", "smb", "enterprise", "vip")
    countries = ("de", "fr", "us", "jp", "br", "in", "cn", "gb")
    for i in range(n):
        yield f"c{i}", {"id": f"c{i}", "name": f"customer {i}", "segment": rng.choice(segments),
                        "country": rng.choice(countries), "credit_limit": rng.randrange(1, 100) * 500,
                        "since": 1_600_000_000_000 + rng.randrange(100_000_000_000)}


def generate(kind: str, n: int, keys: int) -> Iterator[tuple[str, dict[str, Any]]]:
    """(key, value) records of a single-input scenario (`generate_multi` for two inputs)."""
    if kind == "customer":
        # `keys` = customers in the table; 2% of the transactions name a customer the table
        # does not hold (left join: null row)
        import random

        rng = random.Random(5)
        for i, (_, o) in enumerate(sample_orders(n, users=1)):
            c = rng.randrange(int(keys * 1.02))
            yield f"c{c}", {"tx_id": f"t{i}", "customer": f"c{c}", "amount": o["amount"],
                            "currency": "EUR", "country": o["country"], "ts": o["ts"]}
    elif kind == "user":
        for _, o in sample_orders(n, users=keys):
            yield o["user"], o
    elif kind == "user_dense":  # event time 1 ms apart: ~10 orders per user per 10 s window
        for i, (_, o) in enumerate(sample_orders(n, users=keys)):
            o["ts"] = 1_700_000_000_000 + i
            yield o["user"], o
    elif kind == "user_events":  # the pattern's input: event types a/b/c/other, 1 ms apart
        import random

        rng = random.Random(7)
        types = rng.choices(EVENT_TYPES, EVENT_WEIGHTS, k=n)
        for i, (_, o) in enumerate(sample_orders(n, users=keys)):
            yield o["user"], {"user": o["user"], "type": types[i], "amount": o["amount"],
                              "ts": 1_700_000_000_000 + i}
    elif kind == "order":
        yield from sample_orders(n, users=keys)
    elif kind == "unique":
        for i, (_, o) in enumerate(sample_orders(n)):
            o["user"] = key = f"u{i}"
            yield key, o
    else:
        raise ValueError(kind)


def generate_multi(kind: str, n: int, inputs: list[str], *,
                   live: bool = False) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(topic, key, value) records of a scenario reading several topics; `n` in total.

    order_payment: n/2 orders (inputs[0]) and n/2 payments (inputs[1]) keyed by order id.
    Throughput (`live=False`): orders 10 ms apart in event time, each payment at its order's
    time + a uniform offset in [-1m, +5m], the payments produced in event-time order (each
    topic is in order, so with `max_out_of_orderness: 1s` no record is late) and all orders
    before all payments. Latency (`live=True`): order i then payment i, interleaved; the
    producer stamps both with the produce time."""
    if kind != "order_payment":
        raise ValueError(kind)
    import random

    orders_topic, payments_topic = inputs
    rng = random.Random(3)
    half = n // 2
    payments = []
    for order_id, o in sample_orders(half, users=1000):
        order = {"order_id": order_id, "user": o["user"], "amount": o["amount"], "ts": o["ts"]}
        pay = {"order_id": order_id, "payment_id": f"p{order_id[1:]}", "amount": o["amount"],
               "method": rng.choice(("card", "sepa", "paypal")),
               "ts": o["ts"] + rng.randint(*PAYMENT_OFFSET_MS)}
        if live:
            yield orders_topic, order_id, order
            yield payments_topic, order_id, pay
        else:
            yield orders_topic, order_id, order
            payments.append(pay)
    payments.sort(key=lambda p: p["ts"])
    for pay in payments:
        yield payments_topic, pay["order_id"], pay


def produce(label: str, bootstrap: str, topic: str, records: Iterator[tuple[str, Any]], total: int,
            *, rate: float | None = None, stamp_now: bool = False) -> tuple[int, float]:
    return produce_multi(label, bootstrap, ((topic, *rec) for rec in records), total, rate=rate,
                         stamp_now=stamp_now, where=f"to {topic}")


def produce_multi(label: str, bootstrap: str, records: Iterator[tuple[Any, ...]], total: int, *,
                  rate: float | None = None, stamp_now: bool = False,
                  where: str = "to several topics") -> tuple[int, float]:
    """Produce (topic, key, value) records through one producer, with progress lines."""
    every = max(1, total // 4)
    what = f"at {rate:,.0f}/s " if rate else ""
    progress(f"{label}: producing {total:,} records {what}{where}")

    def counted() -> Iterator[tuple[Any, ...]]:
        for i, rec in enumerate(records, 1):
            yield rec
            if i % every == 0 and i < total:
                progress(f"{label}: produced {i:,}/{total:,}")

    t0 = time.monotonic()
    n = produce_json_to(bootstrap, counted(), rate_per_s=rate, stamp_now=stamp_now)
    dt = time.monotonic() - t0
    progress(f"{label}: produced {n:,} records in {dt:.1f}s ({n / dt:,.0f}/s)")
    return n, dt


def produce_inputs(ctx: Ctx, sc: Scenario, info: TopologyInfo, bootstrap: str, label: str,
                   n: int, *, rate: float | None = None, stamp_now: bool = False) -> tuple[int, float]:
    if len(info.inputs) > 1:
        return produce_multi(label, bootstrap, generate_multi(sc.keys, n, info.inputs,
                                                              live=stamp_now),
                             n, rate=rate, stamp_now=stamp_now)
    keys = ctx.customers if sc.keys == "customer" else ctx.keys
    return produce(label, bootstrap, info.input, generate(sc.keys, n, keys), n, rate=rate,
                   stamp_now=stamp_now)


def prepare_topics(ctx: Ctx, info: TopologyInfo, bootstrap: str, label: str) -> dict[str, Any]:
    """Create the input topics; produce the tables (customers) in full. Returns what was done."""
    for t in info.inputs:
        create_topic(bootstrap, t, ctx.partitions)
    out: dict[str, Any] = {}
    for t in info.tables:
        create_topic(bootstrap, t, ctx.partitions)
        n, dt = produce(f"{label} table", bootstrap, t, sample_customers(ctx.customers), ctx.customers)
        out[t] = {"records": n, "produce_s": round(dt, 2)}
    return out



def group_committed(bootstrap: str, group: str, topic: str | list[str]) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        total = 0
        for t in sorted(topic_set(topic)):
            parts = c.list_topics(t, timeout=10).topics[t].partitions
            tps = c.committed([TopicPartition(t, p) for p in parts], timeout=10)
            total += sum(max(tp.offset, 0) for tp in tps)
        return total
    finally:
        c.close()


def count_records(bootstrap: str, topics: list[str], guarantee: str, timeout_s: float = 120) -> int:
    """Records in `topics` as a downstream reader sees them (read_committed under EOS): consumed
    from the beginning to the end of every partition."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-count-{uuid.uuid4().hex[:8]}",
                  "enable.auto.commit": False, "enable.partition.eof": True,
                  "isolation.level": "read_committed" if guarantee == "exactly_once"
                  else "read_uncommitted"})
    try:
        md = c.list_topics(timeout=10)
        parts = [TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in md.topics[t].partitions]
        c.assign(parts)
        pending = {(tp.topic, tp.partition) for tp in parts}
        n = 0
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            for m in c.consume(10_000, 0.5):
                err = m.error()
                if err is None:
                    n += 1
                elif err.code() == KafkaError._PARTITION_EOF:
                    pending.discard((m.topic(), m.partition()))
        if pending:
            raise WorkerError(f"counting output records: {sorted(pending)} not read to the end "
                              f"in {timeout_s:.0f}s")
        return n
    finally:
        c.close()


def high_watermarks(bootstrap: str, topic: str) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-watermarks"})
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts)
    finally:
        c.close()
