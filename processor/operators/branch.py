"""`branch`: route each record to the first case whose predicate holds (or the default case).

The operator ends its chain: it returns nothing itself and leaves one batch per case in
`routed`, which the task runs down the case's child chain. A predicate that raises fails
that record only (StepFailed contract); the records routed before it stay in `routed`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from processor.operators.base import Batch, RoutingOperator, StepFailed


class Branch(RoutingOperator):
    def __init__(self, name: str, predicates: list[Callable[[Any, Any, int], Any] | None]) -> None:
        self.name = name
        self.predicates = predicates  # None: the default case (always last)
        self.routed: list[Batch] = [[] for _ in predicates]

    def process(self, batch: Batch) -> Batch:
        routed: list[Batch] = [[] for _ in self.predicates]
        self.routed = routed
        cases = list(enumerate(self.predicates))
        for i, record in enumerate(batch):
            k, v, t, _ = record
            try:
                for c, pred in cases:
                    if pred is None or pred(k, v, t):
                        routed[c].append(record)
                        break
            except Exception as exc:
                raise StepFailed(self.name, record, exc, index=i) from exc
        return []
