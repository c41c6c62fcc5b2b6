"""Operator fusion: consecutive expression steps (filter, map, key_by) become one generated loop.

Each step on its own is a list comprehension plus a call of its compiled expression per
record; fused, the expressions are inlined into a single loop over the batch, so a
filter+map pipeline costs one pass and no Python call per record. The unfused steps are kept
to re-run a failing batch and name the exact step and record that failed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from processor.codegen import define
from processor.expressions import expression_builtins
from processor.operators.base import Batch, Operator, Stateless, StepFailed
from processor.operators.stateless import Filter, KeyBy, MapValue


def _expression(op: Operator) -> Any:
    if isinstance(op, Filter):
        return op.predicate
    if isinstance(op, MapValue | KeyBy):
        return op.fn
    return None


def _source(op: Operator) -> str | None:
    return getattr(_expression(op), "expr_source", None)


def _line(op: Operator, source: str) -> str:
    if isinstance(op, Filter):
        return f"if not ({source}): continue"
    if isinstance(op, MapValue):
        return f"value = ({source})"
    return f"key = ({source})"


class Fused(Stateless):
    """Several expression steps run as one generated loop."""

    def __init__(self, ops: list[Operator]) -> None:
        super().__init__(" + ".join(op.name for op in ops))
        self.ops = ops
        body = "\n".join(f"        {_line(op, _source(op) or '')}" for op in ops)
        code = (
            "def _fused(batch):\n"
            "    out = []\n"
            "    append = out.append\n"
            "    for key, value, timestamp, _offset in batch:\n"
            f"{body}\n"
            "        append((key, value, timestamp, _offset))\n"
            "    return out\n"
        )
        # the expressions' own builtins: `broadcast` is their topology's
        env: dict[str, Any] = {"__builtins__": expression_builtins(_expression(ops[0]))}
        self._fused: Callable[[Batch], Batch] = define(code, f"fused {self.name}", env, "_fused")

    def step_names(self) -> tuple[str, ...]:
        return (self.name, *(op.name for op in self.ops))

    def _batch(self, batch: Batch) -> Batch:
        return self._fused(batch)

    def process(self, batch: Batch) -> Batch:
        try:
            return self._fused(batch)
        except Exception as exc:
            raise self._locate(batch, exc) from exc

    def _locate(self, batch: Batch, exc: Exception) -> StepFailed:
        """Name the exact step and record: the first record the fused loop fails on, re-run
        step by step (the steps are side-effect free)."""
        for i, record in enumerate(batch):
            try:
                self._fused([record])
            except Exception as one:
                failed = StepFailed(self.name, record, one)
                out: Batch = [record]
                for op in self.ops:
                    try:
                        out = op.process(out)
                    except StepFailed as inner:
                        failed = inner
                        break
                    if not out:
                        break
                failed.record, failed.index = record, i
                failed.partial = self._fused(batch[:i])
                return failed
        return StepFailed(self.name, batch[0], exc)


def fuse(ops: list[Operator]) -> list[Operator]:
    """Replace each run of two or more fusable expression steps with one Fused operator."""
    out: list[Operator] = []
    run: list[Operator] = []
    for op in [*ops, None]:
        if op is not None and _source(op) is not None:
            run.append(op)
            continue
        out.extend([Fused(run)] if len(run) > 1 else run)
        run = []
        if op is not None:
            out.append(op)
    return out
