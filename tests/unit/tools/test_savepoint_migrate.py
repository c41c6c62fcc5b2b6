"""The plan of a restore into a changed topology (`plan_migration`): every aggregate function
appended and dropped, each window kind's entries rewritten and the rest kept byte for byte,
store renames and drops as asked, added stores empty, in-flight records following their
store; refusals name the reason (the likely rename, the flag to add, the incompatible change).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from processor.graph import build_topology
from processor.graph.layout import aggregate_facts, state_layout
from processor.operators import compile_aggregation, parse_field
from processor.operators.accumulators import entry_rewriter, reshaper
from processor.spec import load_spec_text
from processor.spec.steps import PythonReducer
from processor.tools.savepoint_commands import parse_renames
from processor.tools.savepoint_format import SavepointError, decode_bytes, entry_line
from processor.tools.savepoint_migrate import plan_migration
from tests.paths import REPO

MODULE = "tests.unit.tools.test_savepoint_migrate"


def keep_x(acc: list[Any], key: Any, value: dict[str, Any]) -> list[Any]:
    return [*acc, value["x"]]


BASE = {"n": "count()", "s": "sum(value['x'])"}
# each function, and what its field reads right after it is appended (no record yet), then
# after the records x = 4, 1, 7
FUNCTIONS = {
    "count": ("count()", 0, 3), "sum": ("sum(value['x'])", 0, 12),
    "min": ("min(value['x'])", None, 1), "max": ("max(value['x'])", None, 7),
    "avg": ("avg(value['x'])", None, 4.0), "first": ("first(value['x'])", None, 4),
    "last": ("last(value['x'])", None, 7),
    "python": (PythonReducer(python=f"{MODULE}:keep_x", initial=["start"]), ["start"],
               ["start", 4, 1, 7]),
}


def _fields(spec: dict[str, Any]):
    return [parse_field(n, f) for n, f in spec.items()]


def _fed(fields: dict[str, Any], xs: list[int], acc: list[Any] | None = None) -> list[Any]:
    agg = compile_aggregation(_fields(fields))
    acc = agg.new_state() if acc is None else acc
    for x in xs:
        agg.update(acc, "k", {"x": x}, 0)
    return acc


@pytest.mark.parametrize("function", list(FUNCTIONS))
def test_every_function_appended_starts_at_its_initial_value(function: str) -> None:
    spec, empty, after = FUNCTIONS[function]
    new = {**BASE, "added": spec}
    acc = _fed(BASE, [2, 3])
    reshaped = reshaper(aggregate_facts(_fields(BASE)), aggregate_facts(_fields(new)))(acc)
    result = compile_aggregation(_fields(new)).result
    assert result(reshaped) == {"n": 2, "s": 5, "added": empty}
    assert result(_fed(new, [4, 1, 7], reshaped)) == {"n": 5, "s": 17, "added": after}


@pytest.mark.parametrize("function", list(FUNCTIONS))
def test_every_function_removed_drops_its_slots(function: str) -> None:
    spec = FUNCTIONS[function][0]
    old = {"n": "count()", "gone": spec, "l": "last(value['x'])", "s": "sum(value['x'])"}
    new = {"n": "count()", "l": "last(value['x'])", "s": "sum(value['x'])"}
    acc = _fed(old, [4, 1, 7])
    reshaped = reshaper(aggregate_facts(_fields(old)), aggregate_facts(_fields(new)))(acc)
    assert reshaped == _fed(new, [4, 1, 7])
    assert compile_aggregation(_fields(new)).result(reshaped) == {"n": 3, "l": 7, "s": 12}


def test_an_accumulator_of_another_width_is_refused() -> None:
    reshape = reshaper(aggregate_facts(_fields(BASE)), aggregate_facts(_fields(
        {**BASE, "c": "count()"})))
    with pytest.raises(ValueError, match="3 slots where the savepoint's fields take 2"):
        reshape([1, 2, 3])


def test_window_entries_rewritten_and_markers_kept() -> None:
    def add(acc: list[Any]) -> list[Any]:
        return [*acc, "new"]

    def rewrite(facts: dict[str, Any], key: bytes, value: bytes) -> bytes:
        prefix, walk = entry_rewriter(facts, add)
        return orjson.dumps(walk(orjson.loads(value))) if key.startswith(prefix) else value

    def window(kind: str) -> dict[str, Any]:
        return {"operator": "window", "window": {"kind": kind}}

    fixed = window("hopping")
    assert rewrite(fixed, b"W" + bytes(16) + b"k", b"[1,2]") == b'[1,2,"new"]'
    assert rewrite(fixed, b"M", b"120") == b"120"
    session = window("session")
    assert rewrite(session, b"Kk", b"[[0,10,[1]],[20,30,[2]]]") == (
        b'[[0,10,[1,"new"]],[20,30,[2,"new"]]]')
    assert rewrite(session, b"E" + bytes(8) + b"k", b"") == b""
    assert rewrite(window("sliding"), b"Kk", b'[[[5,{"x":1}]],[[5,[1]]],5]') == (
        b'[[[5,{"x":1}]],[[5,[1,"new"]]],5]')
    assert rewrite(window("count"), b"Ck", b"[7,[[3,[1],4,9]]]") == b'[7,[[3,[1,"new"],4,9]]]'
    # a plain aggregate's key is any key
    assert rewrite({"operator": "aggregate"}, b"Wxyz", b"[1]") == b'[1,"new"]'


# -- plans ---------------------------------------------------------------------------------------

TOPOLOGY = """
name: {name}
sources:
  orders: {{topic: orders}}
pipelines:
  - from: orders
    steps:
      - key_by: "value['user']"
      - aggregate:
          store: {store}
          orders: count()
          revenue: sum(value['amount'])
{extra}      - to: {{topic: out}}
{pipelines}"""
SECOND = """  - from: orders
    steps:
      - key_by: "value['country']"
      - aggregate:
          store: {store}
          n: count()
      - to: {{topic: out2}}
"""


def _topology(name: str = "shop", store: str = "totals", extra: str = "",
              second: str | None = None):
    return build_topology(load_spec_text(TOPOLOGY.format(
        name=name, store=store, extra=extra,
        pipelines="" if second is None else SECOND.format(store=second))))


def _manifest(topology, inflight: dict[str, int] | None = None) -> dict[str, Any]:
    layout = state_layout(topology)
    records = inflight or {}
    return {"application": topology.name,
            "stores": {n: {"layout": s.to_dict(), "entries": {"0": 5, "1": 7}}
                       for n, s in layout.stores.items()},
            "inflight": {t: {"records": {"0": records.get(t, 0)}} for t in layout.repartitions}}


def test_same_layout_restores_as_it_is() -> None:
    plan = plan_migration(_manifest(_topology()), _topology(name="shop-v2"))
    assert plan.stores["totals"].rewrite is None and plan.describe() == []
    assert plan.topic("shop-totals-repartition") == "shop-v2-totals-repartition"
    lines = [{"key": "u1", "value": [3, 10]}]
    assert list(plan.stores["totals"].lines(iter(lines))) == lines


def test_an_appended_field_rewrites_the_entries() -> None:
    new = _topology(extra="          largest: max(value['amount'])\n")
    plan = plan_migration(_manifest(_topology()), new)
    totals = plan.stores["totals"]
    assert plan.describe() == ["store totals: 12 entries rewritten: field 'largest' (max) "
                               "appended at its initial value"]
    line = orjson.loads(entry_line(b"u1", b"[3,10]"))
    out = list(totals.lines([line]))
    assert decode_bytes(out[0], "key") == b"u1" and decode_bytes(out[0], "value") == b"[3,10,null]"
    with pytest.raises(SavepointError, match=r"store totals: entry b'u2' is not the state"):
        list(totals.lines([orjson.loads(entry_line(b"u2", b"[3]"))]))


def test_a_renamed_store_needs_the_mapping_and_takes_its_in_flight_records() -> None:
    saved = _manifest(_topology(), {"shop-totals-repartition": 4})
    renamed = _topology(store="sums")
    with pytest.raises(SavepointError, match=r"store sums: its layout matches savepoint store totals.s: "
                       r"probably a rename.*--rename-store totals=sums"):
        plan_migration(saved, renamed)
    plan = plan_migration(saved, renamed, {"totals": "sums"})
    assert plan.stores["sums"].source == "totals" and plan.stores["sums"].rewrite is None
    assert plan.topic("shop-totals-repartition") == "shop-sums-repartition"
    assert plan.saved_topic("shop-sums-repartition") == "shop-totals-repartition"
    assert plan.describe() == ["store sums: from savepoint store totals"]
    # renamed and an appended field, into another application
    both = _topology(name="shop-v2", store="sums", extra="          c: count()\n")
    plan = plan_migration(saved, both, {"totals": "sums"})
    assert plan.topic("shop-totals-repartition") == "shop-v2-sums-repartition"
    assert plan.stores["sums"].changes == ["field 'c' (count) appended at its initial value"]


def test_a_removed_store_is_dropped_only_when_asked_and_an_added_one_starts_empty() -> None:
    saved = _manifest(_topology(second="per_country"), {"shop-per_country-repartition": 3})
    with pytest.raises(SavepointError, match=r"savepoint store per_country: the topology has no "
                       r"such store: --drop-store per_country drops its state"):
        plan_migration(saved, _topology())
    plan = plan_migration(saved, _topology(), drops=["per_country"])
    assert plan.dropped == {"per_country": 12}
    assert plan.topic("shop-per_country-repartition") is None
    assert "savepoint store per_country: dropped (--drop-store), 12 entries not restored" in (
        plan.describe())
    grown = plan_migration(_manifest(_topology()), _topology(second="by_country"))
    assert grown.added == ["by_country"] and "store by_country: new, starts empty" in (
        grown.describe())
    assert grown.saved_topic("shop-by_country-repartition") is None


def test_bad_options_are_refused() -> None:
    saved = _manifest(_topology(second="per_country"))
    cases = [
        ({"nope": "totals"}, (), "--rename-store nope=totals: the savepoint has no store 'nope'"),
        ({"totals": "nope"}, (), "--rename-store totals=nope: the topology has no store 'nope'"),
        ({"per_country": "totals"}, (), "store 'totals' of the topology already restores"),
        ({}, ["totals"], "--drop-store totals: the topology has store 'totals'"),
        ({}, ["nope"], "--drop-store nope: the savepoint has no store 'nope'"),
        ({"per_country": "totals"}, ["per_country"], "both --rename-store and --drop-store"),
    ]
    for renames, drops, why in cases:
        with pytest.raises(SavepointError, match=why.replace("(", r"\(").replace(")", r"\)")):
            plan_migration(saved, _topology(second="per_country"), renames, drops)
    with pytest.raises(Exception, match="expected OLD=NEW"):
        parse_renames(["totals"])
    assert parse_renames(["a=b", "c=d"]) == {"a": "b", "c": "d"}


def test_incompatible_changes_stay_refused_with_their_reasons() -> None:
    saved = _manifest(_topology())
    with pytest.raises(SavepointError, match=r"store totals: field 'revenue': function sum -> "
                       r"avg.*reprocess"):
        plan_migration(saved, build_topology(load_spec_text(
            TOPOLOGY.format(name="shop", store="totals", extra="", pipelines="")
            .replace("sum(value", "avg(value"))))
    with pytest.raises(SavepointError, match=r"field 'c' \(count\(\)\) inserted before existing"):
        plan_migration(saved, build_topology(load_spec_text(
            TOPOLOGY.format(name="shop", store="totals", extra="", pipelines="")
            .replace("          orders: count()", "          c: count()\n          orders: "
                     "count()"))))


def test_restore_refuses_before_touching_the_broker(tmp_path: Path) -> None:
    """A refused migration exits 2 with one line, before any broker call (none is running)."""
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text(TOPOLOGY.format(name="shop", store="totals", extra="", pipelines=""))
    new.write_text(TOPOLOGY.format(name="shop", store="sums", extra="", pipelines=""))
    sp = tmp_path / "sp"
    sp.mkdir()
    manifest = {"format_version": 1, **_manifest(build_topology(load_spec_text(old.read_text())))}
    (sp / "manifest.json").write_bytes(orjson.dumps(manifest))
    for extra, why in (([], "probably a rename"), (["--rename-store", "sums"], "expected OLD=NEW"),
                       (["--rename-store", "totals=nope"], "the topology has no store 'nope'")):
        run = subprocess.run([sys.executable, "-m", "processor", "savepoint", "restore", str(sp),
                              str(new), "--bootstrap-servers", "127.0.0.1:1", *extra], cwd=REPO,
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 2, run.stderr
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and why in lines[0], lines


def test_upgrade_check_names_the_migration_commands_and_a_renamed_store_with_new_fields(
        tmp_path: Path) -> None:
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text(TOPOLOGY.format(name="shop", store="totals", extra="", pipelines=""))
    new.write_text(TOPOLOGY.format(name="shop", store="sums", pipelines="",
                                   extra="          c: count()\n"))
    run = subprocess.run([sys.executable, "-m", "processor", "upgrade-check", str(old), str(new)],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert run.returncode == 3, run.stdout
    assert ("needs a savepoint migration: store sums: a layout a savepoint restore migrates from "
            "that of removed store totals: probably a rename") in run.stdout
    assert ("needs a savepoint migration: store sums: field 'c' (count()) added at the end: "
            "existing accumulators need it appended with its initial value 0 (a savepoint "
            "restore appends it") in run.stdout
    assert ("`processor savepoint create OLD.yaml --to DIR`, then `processor reset NEW.yaml "
            "--to-savepoint DIR`") in run.stdout
    saved = _manifest(build_topology(load_spec_text(old.read_text())))
    with pytest.raises(SavepointError, match=r"store sums: its layout matches savepoint store "
                       r"totals's: probably a rename.*--rename-store totals=sums"):
        plan_migration(saved, build_topology(load_spec_text(new.read_text())))
