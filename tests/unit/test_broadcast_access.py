"""Broadcast state as expressions and process functions see it: installed by the worker into
the stable `broadcast` name the compiled code holds, read-only, updated in place."""

from __future__ import annotations

import orjson
import pytest

from processor.expressions import BroadcastStates, compile_expression
from processor.operators import Filter
from processor.operators.broadcast import BroadcastState
from processor.operators.fusion import fuse
from processor.operators.stateless import MapValue
from processor.serde import serde_for

# what the graph builder makes per topology (Topology.broadcast) and the worker installs into
BROADCAST = BroadcastStates()


@pytest.fixture
def rules():
    state = BroadcastState()
    string, json = serde_for("string"), serde_for("json")
    state.declare("rules", string.decode, json.decode)
    previous = BROADCAST.state
    BROADCAST.install(state)
    yield state
    BROADCAST.install(previous)


def test_expressions_and_fused_loops_see_updates_without_recompiling(rules):
    limit = "value['amount'] > broadcast['rules'].get('limit', {}).get('v', 100)"
    ops = fuse([Filter("f", compile_expression(limit, BROADCAST)),
                MapValue("m", compile_expression("dict(value, rule=broadcast['rules'].get('limit'))",
                                                   BROADCAST))])
    batch = [("k", {"amount": a}, 0, i) for i, a in enumerate([50, 150, 250])]
    assert [v["amount"] for _, v, _, _ in ops[0].process(batch)] == [150, 250]
    rules.update("rules", [(b"limit", orjson.dumps({"v": 200}))])
    out = ops[0].process(batch)
    assert [(v["amount"], v["rule"]) for _, v, _, _ in out] == [(250, {"v": 200})]
    rules.update("rules", [(b"limit", None)])  # a tombstone deletes the rule: default again
    assert len(ops[0].process(batch)) == 2


def test_broadcast_is_read_only_and_unknown_names_are_named(rules):
    view = compile_expression("broadcast['rules']", BROADCAST)(None, None, 0)
    with pytest.raises(TypeError):
        view["x"] = 1  # type: ignore[index]
    with pytest.raises(KeyError, match="rules"):
        compile_expression("broadcast['nope']", BROADCAST)(None, None, 0)


def test_process_functions_read_ctx_broadcast(rules, tmp_path):
    from processor.operators.process import ProcessFunction
    from processor.state import RocksStore
    from processor.timeutil.watermark import Clock

    rules.update("rules", [(b"tag", orjson.dumps("gold"))])

    def fn(ctx, key, value):
        ctx.emit({"v": value, "tag": ctx.broadcast["rules"].get("tag")})

    keys = serde_for("string")
    op = ProcessFunction("p", "s", fn, None, keys.encode, keys.decode, Clock())
    op.ctx.broadcast = BROADCAST
    op.bind(RocksStore(tmp_path / "s"))
    assert op.process([("k", 1, 0, 0)])[0][1] == {"v": 1, "tag": "gold"}


def test_each_topology_has_its_own_broadcast_states():
    from processor.graph import BuildContext, build_topology
    from processor.spec import load_spec_text

    text = """
name: {name}
sources:
  orders: {{topic: orders-{name}}}
  rules: {{topic: rules-{name}, kind: broadcast}}
pipelines:
  - from: orders
    steps:
      - filter: "value['amount'] > broadcast['rules'].get('limit', 0)"
      - map: "dict(value, tag=broadcast['rules'].get('tag'))"
      - to: {{topic: out-{name}}}
"""
    one, two = (build_topology(load_spec_text(text.format(name=n))) for n in ("one", "two"))
    assert one.broadcast is not two.broadcast
    one.broadcast.install({"rules": {"limit": 100, "tag": "one"}})
    two.broadcast.install({"rules": {"limit": 10, "tag": "two"}})
    ctx = BuildContext(emitter_for=lambda end, partition: None)  # type: ignore[arg-type, return-value]
    out = []
    for topo in (one, two):
        (chain,), _ = topo.subtopologies[0].build_chains(ctx)
        out.append(chain[0].process([("k", {"amount": 50}, 0, 0)]))
    assert out[0] == [] and out[1][0][1] == {"amount": 50, "tag": "two"}
