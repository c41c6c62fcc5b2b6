"""Deterministic sample order events for the demo, the tests and the benchmarks."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

COUNTRIES = ("de", "fr", "us", "jp", "br", "in", "cn", "gb")


def sample_orders(n: int, *, users: int = 1000, seed: int = 7, start_ms: int = 1_700_000_000_000,
                  cancelled_ratio: float = 0.05) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield `(order_id, order)`: amounts in cents-precision, some cancelled, some zero."""
    rng = random.Random(seed)
    for i in range(n):
        status = "cancelled" if rng.random() < cancelled_ratio else "paid"
        amount = 0 if rng.random() < 0.02 else round(rng.uniform(1, 500), 2)
        yield f"o{i}", {
            "user": f"u{rng.randrange(users)}",
            "amount": amount,
            "status": status,
            "country": rng.choice(COUNTRIES),
            "ts": start_ms + i * 10,
        }


def revenue_oracle(orders: list[tuple[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """What topologies/revenue_per_user.yaml must output as the final value per user."""
    acc: dict[str, dict[str, Any]] = {}
    for _, o in orders:
        if not (o["amount"] > 0 and o["status"] != "cancelled"):
            continue
        a = acc.setdefault(o["user"], {"orders": 0, "revenue": 0, "largest": None, "country": None})
        a["orders"] += 1
        a["revenue"] += o["amount"]
        a["largest"] = o["amount"] if a["largest"] is None else max(a["largest"], o["amount"])
        a["country"] = o["country"]
    return {
        u: {"user": u, "orders": a["orders"], "revenue": round(a["revenue"], 2),
            "avg_order": round(a["revenue"] / a["orders"], 2), "largest": a["largest"],
            "country": a["country"]}
        for u, a in acc.items()
    }
