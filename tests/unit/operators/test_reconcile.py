"""Reconcile: co-group N streams by key with a timeout, over a real RocksStore (harness of
test_joins.py), against a sequential oracle over random out-of-order input."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processor.expressions import compile_expression
from processor.operators.base import StepFailed
from processor.operators.reconcile import RESERVED_SIDE_NAMES, Reconcile
from processor.state import RocksStore
from processor.timeutil.watermark import Clock
from tests.unit.operators.test_joins import (
    DELAY_MS,
    KEYS,
    STEP,
    T0,
    Driver,
    Make,
    Record,
    canonical,
    plan_strategy,
    rec,
    run,
)

NAMES = ["a", "b", "c"]
AMOUNTS_DIFFER = {
    2: "value['a']['amount'] != value['b']['amount']",
    3: "value['a']['amount'] != value['b']['amount'] or value['b']['amount'] != value['c']['amount']",
}
EPOCH_MS = 500


def reconcile(sides: int = 2, timeout: int = 1_000, mismatch: Callable[..., Any] | str | None = None,
              cache: int = 100_000) -> Make:
    """A factory of reconciles of the first `sides` of NAMES; `mismatch` may be expression text."""
    fn = compile_expression(mismatch) if isinstance(mismatch, str) else mismatch

    def make(clock: Clock) -> Reconcile:
        return Reconcile(STEP, "r", KEYS.encode, KEYS.decode, clock, names=NAMES[:sides],
                         timeout_ms=timeout, mismatch=fn, cache_max_entries=cache)
    return make


def result(key: Any, status: str, missing: list[str], **sides: Any) -> dict[str, Any]:
    """A reconcile result without repeats."""
    return {"key": key, "status": status, "missing": missing, **sides}


# -- against an oracle -----------------------------------------------------------------------------


def reconcile_records(events: list[tuple[int, int, int, int, int, bool]], sides: int) -> list[Record]:
    """(slot, side, amount, gap, jitter, tombstone) -> records out of order by at most DELAY_MS.
    A key lives in one epoch of base time: its records span less than EPOCH_MS + DELAY_MS."""
    out, base = [], T0
    for i, (slot, side, amount, gap, jitter, tomb) in enumerate(events):
        base += gap
        key = f"k{slot}@{base // EPOCH_MS}"
        out.append(rec(key, side % sides, None if tomb else {"i": i, "amount": amount}, base - jitter, i))
    return out


def reconcile_oracle(records: list[Record], sides: int, timeout: int,
                     mismatch: Callable[..., Any] | None) -> list[Record]:
    """The semantics, record by record in arrival order, for input whose timeouts never fire
    before every record of their key arrived (timeout > EPOCH_MS + DELAY_MS): a group fills
    until every side is present (matched / mismatched), what is left is incomplete at the end."""
    names = NAMES[:sides]
    groups: dict[Any, tuple[int, list[Any], list[int]]] = {}
    out: list[Record] = []

    def emit(key: Any, status: str, values: list[Any], repeats: list[int], ts: int) -> None:
        value = result(key, status, [n for n, v in zip(names, values, strict=True) if v is None],
                       **dict(zip(names, values, strict=True)))
        if any(repeats):
            value["repeats"] = {n: r for n, r in zip(names, repeats, strict=True) if r}
        out.append((key, value, ts, 0))

    for key, (side, v), ts, _ in records:
        if v is None:
            continue
        t0, values, repeats = groups.setdefault(key, (ts, [None] * sides, [0] * sides))
        repeats[side] += values[side] is not None
        values[side] = v
        if None not in values:
            del groups[key]
            sides_dict = dict(zip(names, values, strict=True))
            emit(key, "mismatched" if mismatch and mismatch(key, sides_dict, ts) else "matched",
                 values, repeats, ts)
    for key, (t0, values, repeats) in groups.items():
        emit(key, "incomplete", values, repeats, t0 + timeout)
    return out


reconcile_event = st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 1),
                            st.sampled_from([0, 0, 10, 20, 40, 90]),
                            st.one_of(st.sampled_from([0, DELAY_MS]), st.integers(0, DELAY_MS)),
                            st.integers(0, 15).map(lambda n: n == 0))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.integers(0, 70).flatmap(lambda n: st.lists(reconcile_event, min_size=n, max_size=n)),
       plan=plan_strategy, sides=st.sampled_from([2, 3]), with_mismatch=st.booleans(),
       extra=st.sampled_from([1, 2, 50, 1_000]), cache=st.sampled_from([1, 100_000]))
def test_reconcile_matches_the_oracle(events: list[Any], plan: list[Any], sides: int, with_mismatch: bool,
                                      extra: int, cache: int) -> None:
    records = reconcile_records(events, sides)
    timeout = EPOCH_MS + DELAY_MS + extra
    mismatch = AMOUNTS_DIFFER[sides] if with_mismatch else None
    make = reconcile(sides, timeout, mismatch, cache)
    with tempfile.TemporaryDirectory() as tmp:
        got = run(Path(tmp) / "a", make, records, plan)
        reference = run(Path(tmp) / "b", make, records, [(1, "none")] * len(records))
    fn = compile_expression(mismatch) if mismatch else None
    assert canonical(got) == canonical(reconcile_oracle(records, sides, timeout, fn))
    assert got == reference


# -- by example ----------------------------------------------------------------------------------------


def test_a_complete_group_is_reported_at_once_and_leaves_nothing_behind(tmp_path: Path) -> None:
    store = RocksStore(tmp_path / "s")
    d = Driver(store, reconcile(2, mismatch=AMOUNTS_DIFFER[2]))
    assert d.feed([rec("o1", 0, {"amount": 5}, 100, 0), rec("o2", 1, {"amount": 7}, 110, 1)]) == []
    d.checkpoint()
    assert len(list(store.items())) == 2  # two groups, each holding its deadline
    out = d.feed([rec("o1", 1, {"amount": 5}, 150, 2), rec("o2", 0, {"amount": 8}, 90, 3)])
    assert out == [
        ("o1", result("o1", "matched", [], a={"amount": 5}, b={"amount": 5}), 150, 2),
        ("o2", result("o2", "mismatched", [], a={"amount": 8}, b={"amount": 7}), 90, 3)]
    d.checkpoint()
    assert list(store.items()) == []
    assert d.advance(10**6) == []  # the timers went with the groups


def test_an_incomplete_group_is_reported_when_it_times_out(tmp_path: Path) -> None:
    d = Driver(RocksStore(tmp_path / "s"), reconcile(3, timeout=1_000), delay_ms=0)
    assert d.feed([rec("o1", 1, {"p": 1}, 100, 0), rec("o1", 1, None, 200, 1)]) == []  # tombstone ignored
    assert d.feed([rec("o1", 2, {"s": 1}, 1_099, 2)]) == []
    assert d.advance(1_100) == [
        ("o1", result("o1", "incomplete", ["a"], a=None, b={"p": 1}, c={"s": 1}), 1_100, 2)]
    assert d.feed([rec("o2", 0, None, 1_200, 3)]) == []
    assert d.advance(10**6) == []


def test_repeats_are_counted_and_the_latest_value_kept(tmp_path: Path) -> None:
    d = Driver(RocksStore(tmp_path / "s"), reconcile(3, timeout=1_000))
    out = d.feed([rec("o1", 0, "a1", 100, 0), rec("o1", 0, "a2", 101, 1), rec("o1", 2, "c1", 102, 2),
                  rec("o1", 0, "a3", 103, 3), rec("o1", 1, "b1", 104, 4)])
    expected = result("o1", "matched", [], a="a3", b="b1", c="c1")
    assert out == [("o1", {**expected, "repeats": {"a": 2}}, 104, 4)]
    out = d.feed([rec("o1", 1, "b2", 200, 5), rec("o1", 1, "b3", 201, 6)]) + d.advance(10**6)
    assert out == [("o1", {**result("o1", "incomplete", ["a", "c"], a=None, b="b3", c=None),
                           "repeats": {"b": 1}}, 1_200, 6)]


def test_a_record_after_its_group_closed_opens_a_new_one(tmp_path: Path) -> None:
    d = Driver(RocksStore(tmp_path / "s"), reconcile(2, timeout=100), delay_ms=0)
    assert d.feed([rec("o1", 0, "a1", 0, 0), rec("z", 0, "z", 500, 1)]) == [
        ("o1", result("o1", "incomplete", ["b"], a="a1", b=None), 100, 1)]
    # far behind the watermark: its group's timeout has passed already, it is reported at once
    assert d.feed([rec("o1", 1, "b1", 50, 2)]) == [
        ("o1", result("o1", "incomplete", ["a"], a=None, b="b1"), 150, 2)]
    assert d.op.late == []


def test_a_failing_mismatch_expression_changes_nothing(tmp_path: Path) -> None:
    store = RocksStore(tmp_path / "s")
    d = Driver(store, reconcile(2, timeout=1_000, mismatch="value['a']['amount'] > value['b']['limit']"))
    d.feed([rec("o1", 0, {"amount": 5}, 100, 0)])
    d.checkpoint()
    batch = [rec("o2", 0, {"amount": 1}, 101, 1), rec("o1", 1, {"nolimit": 1}, 102, 2),
             rec("o2", 1, {"limit": 0}, 103, 3)]
    with pytest.raises(StepFailed) as info:
        d.feed(batch)
    failed = info.value
    assert (failed.step, failed.index, failed.record, failed.partial) == (STEP, 1, batch[1], [])
    assert isinstance(failed.cause, KeyError)
    # the runtime resumes with the rest: the failed record left o1's group as it was
    assert d.op.process(batch[2:]) == [
        ("o2", result("o2", "mismatched", [], a={"amount": 1}, b={"limit": 0}), 103, 3)]
    d.last_offset = 3
    d.checkpoint()
    assert d.advance(10**6) == [("o1", result("o1", "incomplete", ["b"], a={"amount": 5}, b=None), 1_100, 3)]
    d.checkpoint()
    assert list(store.items()) == []


def test_an_unserializable_value_changes_nothing(tmp_path: Path) -> None:
    store = RocksStore(tmp_path / "s")
    d = Driver(store, reconcile(3))
    batch = [rec("o1", 0, "a", 100, 0), rec("o1", 1, {1, 2}, 101, 1)]
    with pytest.raises(StepFailed) as info:
        d.feed(batch)
    assert info.value.index == 1
    d.last_offset = 1
    assert d.advance(10**6) == [("o1", result("o1", "incomplete", ["b", "c"], a="a", b=None, c=None),
                                 1_100, 1)]


def test_a_restored_reconcile_continues_like_an_uninterrupted_one(tmp_path: Path) -> None:
    records = reconcile_records([(i % 3, (i * 7) % 5, i // 20 % 2, (i * 13) % 50, (i * 31) % DELAY_MS, False)
                                 for i in range(60)], 3)
    make = reconcile(3, timeout=EPOCH_MS + DELAY_MS + 1, mismatch=AMOUNTS_DIFFER[3])
    expected = run(tmp_path / "single", make, records, [(60, "none")])
    assert {r[1]["status"] for r in expected} == {"matched", "mismatched", "incomplete"}
    path = tmp_path / "s"
    store = RocksStore(path)
    d = Driver(store, make)
    got = d.feed(records[:25])
    d.checkpoint()
    wm_state, last = d.wm.state(), d.last_offset
    d.feed(records[25:40])
    d.flush()
    d.op.discard()  # a dirty close: only the checkpoint survives
    store.close()
    store = RocksStore(path)
    d = Driver(store, make, skip_below=25, watermark_state=wm_state)
    d.last_offset = last
    got += d.feed(records[20:]) + d.advance(records[-1][2] + 10**7)
    assert got == expected


def test_reconcile_arguments_are_checked() -> None:
    def make(names: list[str], timeout: int = 10) -> Reconcile:
        return Reconcile(STEP, "r", KEYS.encode, KEYS.decode, Clock(), names=names, timeout_ms=timeout)

    for bad in (["a"], ["a", "a"]):
        with pytest.raises(ValueError, match="at least two distinct"):
            make(bad)
    for name in sorted(RESERVED_SIDE_NAMES):
        with pytest.raises(ValueError, match="field of every reconcile result"):
            make(["a", name])
    with pytest.raises(ValueError, match="positive"):
        make(["a", "b"], 0)
