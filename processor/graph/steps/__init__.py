"""One factory module per family of steps; `KINDS` maps each spec step model to its factory.

A new step kind is a spec model (spec/steps.py), an operator, and a factory registered here.
"""

from typing import Any

from processor.graph.scope import StepKind
from processor.graph.steps import aggregate, branch, joins, pattern, stateless, timed

KINDS: dict[type[Any], StepKind] = {
    **stateless.KINDS, **aggregate.KINDS, **timed.KINDS, **joins.KINDS, **pattern.KINDS,
    **branch.KINDS,
}

__all__ = ["KINDS"]
