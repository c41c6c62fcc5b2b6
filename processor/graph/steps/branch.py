"""Factory of `branch`: a node that ends each stream's chain and routes every record to the
first case whose `when` holds; each case's steps continue in a child chain of the same task.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from processor.graph.model import StepNode
from processor.graph.scope import Scope, StepAt, StepKind, Stream, append_node
from processor.operators.branch import Branch
from processor.spec.steps import BranchCase, BranchStep


def branch_step(scope: Scope, at: StepAt, streams: list[Stream]) -> None:
    path, step = at.path, at.step
    if at.following is not None:
        scope.error((*path[:-1], int(path[-1]) + 1), "a branch ends its pipeline: move the steps "
                    "after it into its cases")
    preds: list[Callable[..., Any] | None] = []
    for c, case in enumerate(step.branch):
        if isinstance(case, BranchCase):
            preds.append(scope.compile((*path, "branch", c, "when"), case.when))
        else:
            preds.append(None)
    if any(p is None for p, case in zip(preds, step.branch, strict=True)
           if isinstance(case, BranchCase)):
        return
    name = at.name
    label = " | ".join(case.when if isinstance(case, BranchCase) else "default"
                       for case in step.branch)
    node = StepNode(path, "branch", label, lambda ctx: Branch(name, preds))
    append_node(streams, node, scope.policy(step))
    for c, case in enumerate(step.branch):
        children = [Stream(s.sub, s.sub.new_chain((s.chain, c)), s.key_changed, s.key_format)
                    for s in streams]
        if isinstance(case, BranchCase):
            scope.walk((*path, "branch", c, "steps"), case.steps, children, at.own)
        else:
            scope.walk((*path, "branch", c, "default"), case.default, children, at.own)


KINDS = {BranchStep: StepKind(branch_step)}
