"""Factory of the keyed `aggregate` step: a changelogged store of one accumulator per key.

All records of a key must reach one task, so a merge of streams or a changed key is
repartitioned first (the repartition topic is named after the store).
"""

from __future__ import annotations

from typing import Any

from processor.graph.layout import aggregate_facts
from processor.graph.model import BuildContext, StepNode
from processor.graph.scope import Scope, StepAt, StepKind, Stream, append_node, auto_name
from processor.operators import Aggregate, Operator, compile_aggregation
from processor.serde import state_key_serde
from processor.spec.steps import AggregateStep


def aggregate_step(scope: Scope, at: StepAt, streams: list[Stream]) -> list[Stream] | None:
    spec = at.step.aggregate
    store_name = spec.store or auto_name("aggregate", at.path)
    one = scope.one_task_per_key(at.path, streams, store_name,
                                 scope.policy(at.step, at.following))
    if one is None:
        return None
    node = _aggregate_node(scope, at, one[0])
    return one if node is None else append_node(one, node, scope.policy(at.step))


def _aggregate_node(scope: Scope, at: StepAt, stream: Stream) -> StepNode | None:
    spec, name = at.step.aggregate, at.name
    apath = (*at.path, "aggregate")
    store = scope.claim_store(apath, spec.store or auto_name("aggregate", at.path), stream.sub.id)
    fields = scope.aggregation(apath, spec.fields)
    if store is None or fields is None:
        return None
    store_name = store.name
    agg = compile_aggregation(fields, scope.broadcast)
    encode = state_key_serde(stream.key_format).encode

    def build(ctx: BuildContext) -> Operator:
        return Aggregate(name, store_name, agg, encode, spec.emit, ctx.cache_max_entries)

    node = StepNode(at.path, "aggregate", fields_label(fields), build, store=store)
    node.state = {"operator": "aggregate", "key_format": stream.key_format,
                  "fields": aggregate_facts(fields)}
    return node


def fields_label(fields: list[Any]) -> str:
    """`total=sum(value['amount']), n=count()`: an aggregate's fields as `describe` shows them."""
    return ", ".join(f"{f.name}={f.func}({f.expr or f.reducer or ''})" for f in fields)


KINDS = {AggregateStep: StepKind(aggregate_step)}
