"""Orders and payments for topologies/reconciliation.yaml, and the oracle of its output.

The generator is seeded and makes exact numbers of each anomaly (shares are of the order
count, rounded): payments with a different amount, orders without payment, payments without
order (orphans), duplicated payments, and records out of order by less than the declared
`max_out_of_orderness`. Records are `(key, value, partition or None)`; orders are keyed by
order id, payments by payment id (the topology re-keys them by `value['order_id']`).

Why duplicates are only made of orphan payments: a group is emitted the moment both sides are
present, and the two topics reach the reconcile task in an interleaving no one controls. A
duplicated payment of an existing order would be counted in `repeats` only if both copies
happened to arrive before the order — not something an exact test can expect. An orphan's
group never completes, so all its copies are in it when it times out: its `repeats` is
certain. For the same reason `expected` refuses (AmbiguousInput) inputs whose result depends
on arrival order instead of guessing.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

Record = tuple[str, dict[str, Any], int | None]

ORDERS, PAYMENTS = "orders", "payments"  # the source names in reconciliation.yaml, in side order
TIMEOUT_MS = 600_000                     # reconcile.timeout: 10m
MAX_OUT_OF_ORDERNESS_MS = 5_000          # the sources' watermark.max_out_of_orderness: 5s
MISMATCH_TOLERANCE = 0.005               # reconcile.mismatch: abs(difference) > 0.005
METHODS = ("card", "paypal", "transfer", "wallet")


class AmbiguousInput(ValueError):
    """The reconcile output for this input depends on arrival order or watermark timing."""


@dataclass(frozen=True)
class ReconciliationSample:
    """Records for the two topics in production order, and which ids carry which anomaly."""

    orders: list[Record]
    payments: list[Record]
    mismatched: frozenset[str]   # order ids whose payment amount differs
    missing: frozenset[str]      # order ids that get no payment
    orphans: frozenset[str]      # order ids of payments without an order
    duplicated: frozenset[str]   # orphan order ids whose payment is sent twice
    out_of_order: dict[str, int]  # per topic: records with an event time below their predecessor's


def generate(n_orders: int = 1000, *, seed: int = 42, start_ms: int = 1_700_000_000_000,
             interval_ms: int = 1000, max_payment_delay_ms: int = 60_000,
             mismatch_share: float = 0.03, missing_share: float = 0.02,
             orphan_share: float = 0.01, duplicate_share: float = 0.005,
             out_of_order_share: float = 0.01, max_disorder_ms: int = 4_000,
             customers: int = 200, partitions: int | None = None) -> ReconciliationSample:
    """Orders every `interval_ms` of event time; each paid `0..max_payment_delay_ms` later.

    `max_disorder_ms` must stay below the topology's max_out_of_orderness (5 s) so no record is
    late, and `max_payment_delay_ms` well below the timeout (10 min) so every paid order matches.
    `partitions=None` leaves partitioning to the producer (by key); a number assigns partitions
    round-robin, keeping each swapped pair and each duplicate in one partition so the disorder
    and the repeat are seen by a single source partition."""
    if max_disorder_ms > MAX_OUT_OF_ORDERNESS_MS or max_payment_delay_ms >= TIMEOUT_MS:
        raise ValueError("keep max_disorder_ms <= 5 s and max_payment_delay_ms < 10 min "
                         "(the topology's out-of-orderness and timeout)")
    rng = random.Random(seed)
    n_missing, n_mismatch = round(missing_share * n_orders), round(mismatch_share * n_orders)
    n_orphans, n_dups = round(orphan_share * n_orders), round(duplicate_share * n_orders)
    if n_missing + n_mismatch > n_orders or n_dups > n_orphans:
        raise ValueError("shares too large: missing + mismatched must fit the orders and "
                         "duplicates the orphans (only orphan payments are duplicated)")
    special = rng.sample(range(n_orders), n_missing + n_mismatch)
    missing, mismatched = set(special[:n_missing]), set(special[n_missing:])

    orders: list[dict[str, Any]] = []
    payments: list[dict[str, Any]] = []
    for i in range(n_orders):
        ts = start_ms + i * interval_ms
        order = {"order_id": f"o{i}", "customer": f"c{rng.randrange(customers)}",
                 "amount": round(rng.uniform(5, 500), 2), "currency": "EUR", "ts": ts}
        orders.append(order)
        if i in missing:
            continue
        amount = order["amount"]
        if i in mismatched:
            delta = round(rng.uniform(0.01, 25), 2)
            amount = round(amount - delta if amount - delta >= 1 else amount + delta, 2)
        payments.append({"payment_id": f"p{i}", "order_id": order["order_id"], "amount": amount,
                         "method": rng.choice(METHODS),
                         "ts": ts + rng.randint(0, max_payment_delay_ms)})
    span = max(n_orders * interval_ms, 1)
    orphan_ids = [f"x{j}" for j in range(n_orphans)]
    for j, oid in enumerate(orphan_ids):
        payments.append({"payment_id": f"q{j}", "order_id": oid,
                         "amount": round(rng.uniform(5, 500), 2), "method": rng.choice(METHODS),
                         "ts": start_ms + rng.randrange(span)})
    payments.sort(key=lambda p: p["ts"])  # stable: ties keep generation order
    duplicated = set(rng.sample(orphan_ids, n_dups))

    order_seq, order_slots = _disorder(orders, round(out_of_order_share * len(orders)),
                                       max_disorder_ms, rng)
    pay_seq, pay_slots = _disorder(payments, round(out_of_order_share * len(payments)),
                                   max_disorder_ms, rng)
    pay_seq, pay_slots = _duplicate(pay_seq, pay_slots, duplicated)
    return ReconciliationSample(
        orders=_records(order_seq, order_slots, "order_id", partitions),
        payments=_records(pay_seq, pay_slots, "payment_id", partitions),
        mismatched=frozenset(f"o{i}" for i in mismatched),
        missing=frozenset(f"o{i}" for i in missing),
        orphans=frozenset(orphan_ids), duplicated=frozenset(duplicated),
        out_of_order={"orders": count_out_of_order(order_seq),
                      "payments": count_out_of_order(pay_seq)})


def _disorder(seq: list[dict[str, Any]], n: int, max_disorder_ms: int,
              rng: random.Random) -> tuple[list[dict[str, Any]], list[int]]:
    """Swap `n` disjoint adjacent pairs whose event times differ by 0 < d < max_disorder_ms:
    exactly `n` records then come after a later one, none by as much as max_disorder_ms.
    Returns the sequence and each record's slot (a swapped pair shares one)."""
    eligible = [i for i in range(len(seq) - 1)
                if 0 < seq[i + 1]["ts"] - seq[i]["ts"] < max_disorder_ms]
    rng.shuffle(eligible)
    taken: set[int] = set()
    for i in eligible:
        if len(taken) == 2 * n:
            break
        if not {i - 1, i, i + 1, i + 2} & taken:
            taken.update((i, i + 1))
    if len(taken) < 2 * n:
        raise ValueError(f"cannot make {n} records out of order within {max_disorder_ms} ms: "
                         "raise max_disorder_ms or lower out_of_order_share")
    out, slots = list(seq), list(range(len(seq)))
    for i in sorted(taken)[::2]:
        out[i], out[i + 1] = out[i + 1], out[i]
        slots[i + 1] = slots[i]
    return out, slots


def _duplicate(seq: list[dict[str, Any]], slots: list[int],
               ids: set[str]) -> tuple[list[dict[str, Any]], list[int]]:
    """Send the payments of these order ids twice in a row (a producer retry): same value."""
    out, out_slots = [], []
    for value, slot in zip(seq, slots, strict=True):
        out.append(value)
        out_slots.append(slot)
        if value["order_id"] in ids:
            out.append(dict(value))
            out_slots.append(slot)
    return out, out_slots


def _records(seq: list[dict[str, Any]], slots: list[int], key_field: str,
             partitions: int | None) -> list[Record]:
    numbered = {s: n for n, s in enumerate(dict.fromkeys(slots))}
    return [(v[key_field], v, None if partitions is None else numbered[s] % partitions)
            for v, s in zip(seq, slots, strict=True)]


def count_out_of_order(values: Iterable[Any]) -> int:
    """Records whose event time is below the previous record's (values or records)."""
    n, previous = 0, None
    for v in values:
        ts = (v[1] if isinstance(v, tuple) else v)["ts"]
        if previous is not None and ts < previous:
            n += 1
        previous = ts
    return n


def is_mismatch(order: dict[str, Any], payment: dict[str, Any]) -> bool:
    """reconcile.mismatch of the topology, in Python."""
    return abs(order["amount"] - payment["amount"]) > MISMATCH_TOLERANCE


def expected(orders: Iterable[tuple[Any, ...]], payments: Iterable[tuple[Any, ...]],
             final_watermark: int, *, timeout_ms: int = TIMEOUT_MS) -> dict[str, dict[str, Any]]:
    """order id -> the reconcile output for every group that must be closed by a watermark
    of `final_watermark`: matched and mismatched groups (emitted once complete, whatever the
    watermark) and incomplete ones with first event time + timeout <= final_watermark.

    Orders are grouped by record key, payments by `value['order_id']`; records are
    `(key, value)` or `(key, value, partition)`. Raises AmbiguousInput where the topology's
    result depends on arrival order: a complete group with a repeated side (does the repeat
    come before completion?), differing copies of one side (which is kept?), records of a group
    or records of a group spread over `timeout_ms` or more of event time (does the later one
    still join, or open a new group?)."""
    groups: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for key, value, *_ in orders:
        groups.setdefault(key, {ORDERS: [], PAYMENTS: []})[ORDERS].append(value)
    for _, value, *_ in payments:
        groups.setdefault(value["order_id"], {ORDERS: [], PAYMENTS: []})[PAYMENTS].append(value)
    out: dict[str, dict[str, Any]] = {}
    for gid, sides in groups.items():
        times = [v["ts"] for copies in sides.values() for v in copies]
        if max(times) - min(times) >= timeout_ms:
            raise AmbiguousInput(f"group {gid!r} spans {max(times) - min(times)} ms >= the "
                                 f"timeout: whether its later records join it depends on timing")
        for side, copies in sides.items():
            if any(c != copies[0] for c in copies[1:]):
                raise AmbiguousInput(f"group {gid!r}: differing {side} records for one id")
        repeats = {side: len(c) - 1 for side, c in sides.items() if len(c) > 1}
        o = sides[ORDERS][0] if sides[ORDERS] else None
        p = sides[PAYMENTS][0] if sides[PAYMENTS] else None
        if o is not None and p is not None:
            if repeats:
                raise AmbiguousInput(f"group {gid!r} is complete and has repeats {repeats}: they "
                                     "count only if they arrive before the group completes")
            status = "mismatched" if is_mismatch(o, p) else "matched"
            out[gid] = {"key": gid, "status": status, "missing": [], ORDERS: o, PAYMENTS: p}
            continue
        if final_watermark < times[0] + timeout_ms:  # one side, equal copies: one event time
            continue  # still open
        result = {"key": gid, "status": "incomplete", "missing": [ORDERS if o is None else PAYMENTS],
                  ORDERS: o, PAYMENTS: p}
        if repeats:
            result["repeats"] = repeats
        out[gid] = result
    return out
