"""The revenue-per-user scenario used by the end-to-end, crash and rebalance tests."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import orjson

from processor.examples.revenue import revenue_oracle, sample_orders
from processor.tools.generator import create_topic, produce_json
from tests.integration.kafka import (
    WorkerProcess,
    assert_revenue_matches,
    latest_json_by_key,
    read_all,
    topology_file,
)


@dataclass
class RevenueScenario:
    bootstrap: str
    tmp: Path
    unique: str
    guarantee: str = "exactly_once"

    def __post_init__(self) -> None:
        self.name = f"rev-{self.unique}"
        self.input = f"orders-{self.unique}"
        self.output = f"revenue-{self.unique}"
        self.topology = topology_file(self.tmp, "revenue_per_user.yaml", self.name, {
            "name: revenue-per-user": f"name: {self.name}",
            "topic: orders": f"topic: {self.input}",
            "topic: revenue-per-user": f"topic: {self.output}",
        })
        self.produced: list[tuple[str, dict[str, Any]]] = []
        create_topic(self.bootstrap, self.input, 4)

    def produce(self, n: int, *, users: int = 300, seed: int = 1, rate: float | None = None) -> None:
        orders = list(sample_orders(n, users=users, seed=seed))
        orders = [(f"{k}-{seed}", v) for k, v in orders]
        produce_json(self.bootstrap, self.input, orders, rate_per_s=rate)
        self.produced.extend(orders)

    def worker(self, state: str = "a", **kwargs: Any) -> WorkerProcess:
        state_dir = self.tmp / f"state-{state}"
        return WorkerProcess(self.topology, self.bootstrap, state_dir, self.tmp,
                             guarantee=self.guarantee, **kwargs)

    def outputs(self) -> list[tuple[bytes | None, bytes | None, int]]:
        return read_all(self.bootstrap, self.output)

    def assert_no_repeated_outputs(self) -> None:
        """Each emission of a user carries its running order count: under exactly-once the
        counts of a key strictly increase (a repeat or a step back is a duplicate emission)."""
        seen: dict[bytes | None, list[int]] = {}
        for key, value, _ in self.outputs():
            seen.setdefault(key, []).append(orjson.loads(value)["orders"])
        repeats = {k: v for k, v in seen.items() if any(b <= a for a, b in pairwise(v))}
        assert not repeats, (f"outputs repeated for {len(repeats)} keys: "
                             f"{list(repeats.items())[:3]}")

    def assert_final_state_matches_oracle(self) -> None:
        assert_revenue_matches(latest_json_by_key(self.outputs()), revenue_oracle(self.produced))
