"""Factories of the per-record steps: filter, map, flat_map, key_by, python, and `to` a topic.

They keep no state, so several streams (a merge of sources) share one node. `key_by` and
`python` change the key: a stateful step after them repartitions first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from processor.graph.model import StepNode
from processor.graph.scope import Scope, StepAt, StepKind, Stream, append_node
from processor.operators import Filter, FlatMap, KeyBy, MapValue, PythonStep
from processor.operators.base import Operator
from processor.spec.steps import FieldsProjection, FilterStep, FlatMapStep, KeyByStep, MapStep, ToStep
from processor.spec.steps import PythonStep as PythonStepSpec


def _place(scope: Scope, at: StepAt, streams: list[Stream], node: StepNode | None, *,
           rekeys: bool = False) -> list[Stream]:
    if node is None:
        return streams
    append_node(streams, node, scope.policy(at.step))
    if rekeys:  # a stateful step after this one repartitions first
        for stream in streams:
            stream.key_changed = True
    return streams


def filter_step(scope: Scope, at: StepAt, streams: list[Stream]) -> list[Stream]:
    source, name = at.step.filter, at.name
    fn = scope.compile((*at.path, "filter"), source)
    node = fn and StepNode(at.path, "filter", source, lambda ctx: Filter(name, fn))
    return _place(scope, at, streams, node)


def map_step(scope: Scope, at: StepAt, streams: list[Stream]) -> list[Stream]:
    spec, name = at.step.map, at.name
    if not isinstance(spec, FieldsProjection):
        return _record_fn_step(scope, at, streams, "map", spec, MapValue)
    fn = scope.projection((*at.path, "map"), spec)
    label = "fields " + ", ".join(spec.fields)
    node = fn and StepNode(at.path, "map", label, lambda ctx: MapValue(name, fn))
    return _place(scope, at, streams, node)


def _record_fn_step(scope: Scope, at: StepAt, streams: list[Stream], kind: str,
                    spec: Any, make: Callable[[str, Any], Operator], *,
                    rekeys: bool = False) -> list[Stream]:
    """A step over one function of the record: an expression or a `python:` reference."""
    name = at.name
    fn = scope.record_fn((*at.path, kind), spec)
    label = spec if isinstance(spec, str) else spec.python
    node = fn and StepNode(at.path, kind, label, lambda ctx: make(name, fn))
    return _place(scope, at, streams, node, rekeys=rekeys)


def flat_map_step(scope: Scope, at: StepAt, streams: list[Stream]) -> list[Stream]:
    return _record_fn_step(scope, at, streams, "flat_map", at.step.flat_map, FlatMap)


def key_by_step(scope: Scope, at: StepAt, streams: list[Stream]) -> list[Stream]:
    return _record_fn_step(scope, at, streams, "key_by", at.step.key_by, KeyBy, rekeys=True)


def python_step(scope: Scope, at: StepAt, streams: list[Stream]) -> list[Stream]:
    ref, name = at.step.python, at.name
    fn = scope.callable((*at.path, "python"), ref)
    node = fn and StepNode(at.path, "python", ref, lambda ctx: PythonStep(name, fn))
    return _place(scope, at, streams, node, rekeys=True)


def to_step(scope: Scope, at: StepAt, streams: list[Stream]) -> list[Stream]:
    end = scope.sink_end((*at.path, "to"), at.step.to)
    node = end and scope.sink_node(at.path, end, "sink")
    return _place(scope, at, streams, node)


KINDS = {
    FilterStep: StepKind(filter_step),
    MapStep: StepKind(map_step),
    FlatMapStep: StepKind(flat_map_step),
    KeyByStep: StepKind(key_by_step),
    PythonStepSpec: StepKind(python_step),
    ToStep: StepKind(to_step),
}
