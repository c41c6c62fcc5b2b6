"""A sub-topology's operator chains as a task walks them, read once when the task is built.

A chain is a list of operators run in order. A chain ending in a branch has child chains,
one per case; `parents` (from the graph) says which case of which chain each child hangs
from. Here the task learns, through the operator contract (operators/base.py), where each
stateful and timed operator sits and where each chain's first stateful operator is: a failure
up to it is a failure of one input record, after it one of a derived result.
"""

from __future__ import annotations

from typing import Generic, NamedTuple, TypeVar

from processor.operators.base import (
    Operator,
    RoutingOperator,
    StatefulOperator,
    TimedOperator,
)

Op = TypeVar("Op", bound=Operator)


class StepAt(NamedTuple, Generic[Op]):
    """An operator and where it sits: `chains[chain][index]`."""

    chain: int
    index: int
    op: Op


class ChainTree:
    """The chains, their branch cases and the operators the task drives beyond `process`."""

    def __init__(self, chains: list[list[Operator]], parents: dict[int, tuple[int, int]]) -> None:
        self.chains = chains
        # chain -> {case: child chain}; its routing operator (the chain's last)
        self.children: dict[int, dict[int, int]] = {}
        for child, (parent, case) in parents.items():
            self.children.setdefault(parent, {})[case] = child
        self.routers: dict[int, RoutingOperator] = {}
        for ci in self.children:
            last = chains[ci][-1]
            if not isinstance(last, RoutingOperator):
                raise TypeError(f"chain {ci} has cases but ends in {type(last).__name__}, "
                                "not a routing operator")
            self.routers[ci] = last
        # chain -> the chains above it, nearest first (the root last)
        self.ancestors = {ci: _ancestors(ci, parents) for ci in range(len(chains))}
        self.roots = [ci for ci in range(len(chains)) if ci not in parents]
        self.first_stateful = [next((i for i, op in enumerate(chain)
                                     if isinstance(op, StatefulOperator)), len(chain))
                               for chain in chains]
        self.stateful: list[StepAt[StatefulOperator]] = [
            StepAt(ci, oi, op) for ci, chain in enumerate(chains)
            for oi, op in enumerate(chain) if isinstance(op, StatefulOperator)]
        self.timed: list[StepAt[TimedOperator]] = [
            StepAt(ci, oi, op) for ci, oi, op in self.stateful if isinstance(op, TimedOperator)]

    def root_of(self, ci: int) -> int:
        above = self.ancestors[ci]
        return above[-1] if above else ci

    def find(self, step: str) -> StepAt[Operator] | None:
        """Where the operator running spec step `step` sits; None if the topology changed
        since (the step is gone)."""
        for ci, chain in enumerate(self.chains):
            for i, op in enumerate(chain):
                if step in op.step_names():
                    return StepAt(ci, i, op)
        return None


def _ancestors(ci: int, parents: dict[int, tuple[int, int]]) -> list[int]:
    out = []
    while ci in parents:
        ci = parents[ci][0]
        out.append(ci)
    return out
