"""Migrated accumulators are what the operator reads: the real operators over real RocksDB.

Application A (the old fields) runs the first half of a stream, its store goes through the
savepoint's lines and `plan_migration` (the topologies' own layouts), into a new store that the
new topology's operator B binds and runs the second half on. The reference C is the new
topology run over the whole stream from the start. The added fields read `value['y']`, which
is None in the records before the cut ( count/sum/min/max/avg/last and the python
reducer below skip it), so "aggregates only the records after the cut" and "had the field from
the start" coincide and B's outputs must equal C's exactly, every field; `first` (which takes
the first record, None or not) is checked against the first value after the cut. A removed
field: B equals C (the new fields from the start) exactly.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from processor.graph import build_topology
from processor.graph.layout import state_layout
from processor.operators import Aggregate, compile_aggregation, parse_field
from processor.serde import serde_for
from processor.spec import load_spec_text
from processor.spec.steps import PythonReducer
from processor.state import RocksStore
from processor.timeutil.watermark import PartitionWatermark
from processor.tools.savepoint_format import decode_bytes, entry_line
from processor.tools.savepoint_migrate import plan_migration
from tests.unit.operators.windows.test_windows import FULL, Harness, window_spec

MODULE = "tests.unit.tools.test_savepoint_migrate_state"
STRING = serde_for("string")
LATENESS, OOO = 5, 8


def collect_y(acc: list[Any], key: Any, value: dict[str, Any]) -> list[Any]:
    if value.get("y") is not None:
        acc.append(value["y"])
    return acc


def concat(earlier: list[Any], later: list[Any]) -> list[Any]:
    return earlier + later


ADDED = {"ny": "count(value['y'])", "sy": "sum(value['y'])", "loy": "min(value['y'])",
         "hiy": "max(value['y'])", "avgy": "avg(value['y'])", "ly": "last(value['y'])",
         "ys": PythonReducer(python=f"{MODULE}:collect_y", initial=[], merge=f"{MODULE}:concat")}
REMOVED = ("lo", "avg", "f", "xs")  # one- and two-slot functions and a python reducer
WINDOWS = {"tumbling": {"size": 20}, "hopping": {"size": 30, "advance": 10},
           "sliding": {"span": 15}, "session": {"gap": 12}, "count": {"size": 3, "slide": 2}}


def _yaml_fields(fields: dict[str, Any]) -> str:
    out = []
    for name, f in fields.items():
        if isinstance(f, PythonReducer):
            f = {"python": f.python, "initial": f.initial, "merge": f.merge}
        out.append(f"          {name}: {json.dumps(f)}")
    return "\n".join(out)


def _topology(fields: dict[str, Any], window: dict[str, Any] | None = None):
    step = "" if window is None else f"      - window: {json.dumps(window)}\n"
    return build_topology(load_spec_text(f"""
name: shop
sources:
  events: {{topic: events, timestamp: {{field: ts}}, watermark: {{max_out_of_orderness: {OOO}}}}}
pipelines:
  - from: events
    steps:
{step}      - aggregate:
          store: s
{_yaml_fields(fields)}
      - to: {{topic: out}}
"""))


def _window_yaml(kind: str, params: dict[str, int], emit: str) -> dict[str, Any]:
    shape: Any = {"tumbling": params.get("size"), "sliding": params.get("span"),
                  "hopping": params, "session": params, "count": params}[kind]
    return {kind: shape, "allowed_lateness": LATENESS, "emit": emit, "late": "drop"}


def _stream(n: int, seed: int, cut: int) -> list[tuple[Any, Any, int, int]]:
    """Keyed records with disorder (some late); `y` is None before offset `cut`."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        value = {"x": rng.randint(-5, 20), "y": rng.randint(-9, 30) if i >= cut else None}
        out.append((rng.choice("abcd"), value, i * 3 - rng.randint(0, 12), i))
    return out


def _migrate(entries: list[tuple[bytes, bytes]], old, new) -> list[tuple[bytes, bytes]]:
    """A's store entries as a savepoint holds them, through the restore's migration."""
    manifest = {"application": "shop", "inflight": {},
                "stores": {name: {"layout": layout.to_dict(), "entries": {"0": len(entries)}}
                           for name, layout in state_layout(old).stores.items()}}
    plan = plan_migration(manifest, new).stores["s"]
    assert plan.rewrite is not None and plan.changes
    lines = [orjson.loads(entry_line(k, v)) for k, v in entries]
    return [(decode_bytes(x, "key"), decode_bytes(x, "value")) for x in plan.lines(lines)]


# -- plain aggregates --------------------------------------------------------------------------


def _aggregate(path: Path, fields: dict[str, Any], emit: str) -> tuple[Aggregate, RocksStore]:
    agg = compile_aggregation([parse_field(n, f) for n, f in fields.items()])
    store = RocksStore(path)
    op = Aggregate("pipelines[0].steps[0]", "s", agg, STRING.encode, emit)
    op.bind(store)
    return op, store


def _run_aggregate(op: Aggregate, store: RocksStore, records: list[Any]) -> list[Any]:
    out = []
    for i in range(0, len(records), 8):  # the cuts below fall on a batch boundary
        out += op.process(records[i:i + 8])
        emits, writes = op.flush()
        out += emits
        store.apply(writes, {})
        op.committed()
    return out


@pytest.mark.parametrize("emit", ["every_record", "on_checkpoint"])
@pytest.mark.parametrize("change", ["added", "removed"])
def test_plain_aggregate_after_migration_equals_the_new_topology_from_the_start(
        tmp_path: Path, emit: str, change: str) -> None:
    records = _stream(400, seed=1, cut=200)
    old = dict(FULL)
    new = {**FULL, **ADDED} if change == "added" else {
        n: f for n, f in FULL.items() if n not in REMOVED}
    a, store_a = _aggregate(tmp_path / "a", old, emit)
    _run_aggregate(a, store_a, records[:200])
    migrated = _migrate(list(store_a.items()), _topology(old), _topology(new))
    store_a.close()
    b, store_b = _aggregate(tmp_path / "b", new, emit)
    store_b.apply(dict(migrated), {})
    after = _run_aggregate(b, store_b, records[200:])
    c, store_c = _aggregate(tmp_path / "c", new, emit)
    reference = _run_aggregate(c, store_c, records)
    assert after and after == reference[-len(after):]
    if emit == "on_checkpoint":  # per key, the state equals the reference's
        for key in "abcd":
            kb = STRING.encode(key)
            assert b.read(store_b, kb) == c.read(store_c, kb)
    store_b.close()
    store_c.close()


def test_an_added_first_is_the_first_value_after_the_cut(tmp_path: Path) -> None:
    records = _stream(300, seed=2, cut=150)
    old = {"n": "count()"}
    new = {"n": "count()", "fy": "first(value['y'])"}
    a, store_a = _aggregate(tmp_path / "a", old, "on_checkpoint")
    _run_aggregate(a, store_a, records[:150])
    migrated = _migrate(list(store_a.items()), _topology(old), _topology(new))
    b, store_b = _aggregate(tmp_path / "b", new, "on_checkpoint")
    store_b.apply(dict(migrated), {})
    _run_aggregate(b, store_b, records[150:])
    for key in "abcd":
        after = [v["y"] for k, v, _, _ in records[150:] if k == key]
        got = b.read(store_b, STRING.encode(key))
        assert got == {"n": sum(1 for r in records if r[0] == key), "fy": after[0]}
    store_a.close()
    store_b.close()


# -- windowed aggregates -----------------------------------------------------------------------


def _run_windows(h: Harness, records: list[Any]) -> list[Any]:
    out = []
    for i in range(0, len(records), 9):
        o, _ = h.run(records[i:i + 9], close_at_end=True)
        out += o
        h.checkpoint()
    return out


@pytest.mark.parametrize("emit", ["final", "updates"])
@pytest.mark.parametrize("kind", list(WINDOWS))
@pytest.mark.parametrize("change", ["added", "removed"])
def test_windows_after_migration_equal_the_new_topology_from_the_start(
        tmp_path: Path, kind: str, emit: str, change: str) -> None:
    params = WINDOWS[kind]
    records = _stream(360, seed=3, cut=180)
    old = dict(FULL)
    new = {**FULL, **ADDED} if change == "added" else {
        n: f for n, f in FULL.items() if n not in REMOVED}
    spec = window_spec(kind, params, LATENESS, emit)
    window = _window_yaml(kind, params, emit)
    a = Harness(tmp_path / "a", spec, old, OOO)
    a_out = _run_windows(a, records[:180])
    migrated = _migrate(list(a.store.items()), _topology(old, window), _topology(new, window))
    b = Harness(tmp_path / "b", spec, new, OOO)
    b.store.apply(dict(migrated), {})
    b.op.bind(b.store)  # as a restored task: the store, the watermark the savepoint carried
    b.wm = PartitionWatermark(OOO)
    b.wm.max_ts = a.wm.max_ts
    b.clock.set_batch([], [], b.wm.current)
    b_out = b.op.on_watermark(b.wm.current, 179)
    b_out += _run_windows(b, records[180:])
    c = Harness(tmp_path / "c", spec, new, OOO)
    reference = _run_windows(c, records)
    assert b.op.windows_closed + a.op.windows_closed == c.op.windows_closed
    assert b_out and b_out == reference[len(a_out):]
    for h in (a, b, c):
        h.close()
