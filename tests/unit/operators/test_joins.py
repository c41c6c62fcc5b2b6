"""Interval joins (over a real RocksStore, driven like a task does) and stream-table lookup joins.

The interval join is checked against a brute-force oracle over random out-of-order input fed
in random batches with checkpoints, crashes and restarts; the reconcile tests
(test_reconcile.py) reuse the harness defined here."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processor.expressions import compile_expression
from processor.operators.base import StepFailed
from processor.operators.joins import RESERVED_SIDE_NAMES, IntervalJoin, Reconcile, TableJoin
from processor.serde import serde_for
from processor.state import RocksStore
from processor.timeutil.watermark import Clock
from tests.unit.operators.test_process import Driver as ProcessDriver

KEYS = serde_for("json")
STEP = "pipelines[0].steps[1]"
T0 = 1_700_000_000_000
DELAY_MS = 200
Record = tuple[Any, Any, int, int]
Make = Callable[[Clock], Any]


def rec(key: Any, side: int, value: Any, ts: int, offset: int) -> Record:
    """A join input record: the value carries its side."""
    return (key, (side, value), ts, offset)


def interval(kind: str = "inner", before: int = 10, after: int = 20, cache: int = 100_000) -> Make:
    """A factory of interval joins of `left` with `right` over the task's clock."""

    def make(clock: Clock) -> IntervalJoin:
        return IntervalJoin(STEP, "j", KEYS.encode, KEYS.decode, clock, before_ms=before, after_ms=after,
                            kind=kind, names=("left", "right"), cache_max_entries=cache)
    return make


class Driver(ProcessDriver):
    """test_process's task in miniature, around a join operator; checkpoints without a result."""

    def __init__(self, store: RocksStore, make: Make, *, delay_ms: int = DELAY_MS, skip_below: int = -1,
                 watermark_state: dict[str, Any] | None = None) -> None:
        super().__init__(store, None, delay_ms=delay_ms, skip_below=skip_below,
                         watermark_state=watermark_state, make=make)


def run(path: Path, make: Make, records: list[Record], plan: list[tuple[int, str]] | None = None,
        final: int | None = None) -> list[Record]:
    """Feed `records` in batches of the plan's sizes; after each batch: nothing, flush,
    checkpoint, crash (discard, re-read from the last checkpoint) or restart (checkpoint, close
    and reopen the store, new operator). Then the watermark moves past everything. Returns the
    committed outputs; checks that nothing was late and no state is left behind."""
    store = RocksStore(path)
    d = Driver(store, make)
    committed: list[Record] = []
    pending: list[Record] = []
    at, saved = 0, (0, d.wm.state(), -1)
    steps = iter(plan or [])
    while at < len(records):
        size, action = next(steps, (5, "checkpoint"))
        batch = records[at:at + size]
        pending += d.feed(batch)
        assert d.op.late == []
        at += len(batch)
        if action == "flush":
            d.flush()
        elif action in ("checkpoint", "restart"):
            d.checkpoint()
            committed += pending
            pending = []
            saved = (at, d.wm.state(), d.last_offset)
            if action == "restart":
                store.close()
                store = RocksStore(path)
                d = Driver(store, make, watermark_state=saved[1], skip_below=at)
                d.last_offset = saved[2]
        elif action == "crash":
            d.op.discard()
            pending = []
            at, wm_state, last = saved
            d = Driver(store, make, watermark_state=wm_state, skip_below=at)
            d.last_offset = last
    pending += d.advance(final if final is not None else (records[-1][2] if records else T0) + 10**7)
    d.checkpoint()
    committed += pending
    leftover = list(store.items())
    store.close()
    assert leftover == [], "closed intervals and groups leave no state and no timers behind"
    return committed


def canonical(out: list[Record]) -> list[bytes]:
    """The outputs as a sorted multiset of (key, value, timestamp): offsets depend on arrival."""
    return sorted(orjson.dumps([k, v, t], option=orjson.OPT_SORT_KEYS) for k, v, t, _ in out)


def shuffled_records(events: list[tuple[int, int, int, int, bool]]) -> list[Record]:
    """(key, side, gap, jitter, tombstone) -> records whose base time advances by gap and whose
    event time is base - jitter: out of order by at most DELAY_MS, so none is late."""
    out, base = [], T0
    for i, (key, side, gap, jitter, tomb) in enumerate(events):
        base += gap
        out.append(rec(f"k{key}", side, None if tomb else {"i": i}, base - jitter, i))
    return out


plan_strategy = st.lists(
    st.tuples(st.integers(1, 12),
              st.sampled_from(["none", "none", "flush", "checkpoint", "crash", "restart"])),
    max_size=12)


# -- interval join -------------------------------------------------------------------------------


def interval_oracle(records: list[Record], before: int, after: int, kind: str) -> list[Record]:
    """Brute force over the whole input: every pair in the interval, then the unmatched."""
    lefts = [(k, v, t) for k, (s, v), t, _ in records if s == 0 and v is not None]
    rights = [(k, v, t) for k, (s, v), t, _ in records if s == 1 and v is not None]
    out, lm, rm = [], set(), set()
    for i, (k, lv, tl) in enumerate(lefts):
        for j, (k2, rv, tr) in enumerate(rights):
            if k == k2 and tl - before <= tr <= tl + after:
                out.append((k, {"left": lv, "right": rv}, max(tl, tr), 0))
                lm.add(i)
                rm.add(j)
    if kind != "inner":
        out += [(k, {"left": v, "right": None}, t, 0) for i, (k, v, t) in enumerate(lefts) if i not in lm]
    if kind == "outer":
        out += [(k, {"left": None, "right": v}, t, 0) for j, (k, v, t) in enumerate(rights) if j not in rm]
    return out


# times on a 10 ms grid make records fall on interval edges, and arrive right at the watermark
jitter = st.one_of(st.sampled_from([0, DELAY_MS]), st.integers(0, DELAY_MS // 10).map(lambda j: j * 10))
interval_event = st.tuples(st.integers(0, 2), st.integers(0, 1), st.sampled_from([0, 0, 10, 20, 40]),
                           jitter, st.integers(0, 15).map(lambda n: n == 0))
bound = st.one_of(st.integers(0, 15).map(lambda b: b * 10), st.integers(0, 150))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.integers(0, 70).flatmap(lambda n: st.lists(interval_event, min_size=n, max_size=n)),
       plan=plan_strategy, kind=st.sampled_from(["inner", "left", "outer"]), before=bound, after=bound,
       cache=st.sampled_from([1, 100_000]))
def test_interval_join_matches_a_brute_force_oracle(events: list[Any], plan: list[Any], kind: str,
                                                    before: int, after: int, cache: int) -> None:
    records = shuffled_records(events)
    make = interval(kind, before, after, cache)
    with tempfile.TemporaryDirectory() as tmp:
        got = run(Path(tmp) / "a", make, records, plan)
        reference = run(Path(tmp) / "b", make, records, [(1, "none")] * len(records))
    assert canonical(got) == canonical(interval_oracle(records, before, after, kind))
    # the same input gives the same sequence, whatever the batches, checkpoints and crashes
    assert got == reference


def test_pairs_are_emitted_on_arrival_with_the_later_timestamp(tmp_path: Path) -> None:
    d = Driver(RocksStore(tmp_path / "s"), interval("inner", before=10, after=20))
    assert d.feed([rec("a", 0, "L100", 100, 0), rec("b", 1, "other key", 100, 1)]) == []
    out = d.feed([rec("a", 1, "R90", 90, 2), rec("a", 1, "R89", 89, 3), rec("a", 1, "R120", 120, 4),
                  rec("a", 1, "R121", 121, 5)])
    assert out == [("a", {"left": "L100", "right": "R90"}, 100, 2),
                   ("a", {"left": "L100", "right": "R120"}, 120, 4)]
    # a new left record meets the stored right ones, in the order they were stored
    out = d.feed([rec("a", 0, "L101", 101, 6)])
    assert out == [("a", {"left": "L101", "right": "R120"}, 120, 6),
                   ("a", {"left": "L101", "right": "R121"}, 121, 6)]


def test_records_with_the_same_key_and_time_are_all_kept(tmp_path: Path) -> None:
    store = RocksStore(tmp_path / "s")
    d = Driver(store, interval("inner", before=0, after=0))
    d.feed([rec("a", 0, "x", 50, 0), rec("a", 0, "y", 50, 1), rec("a", 0, "x", 50, 2)])
    d.checkpoint()
    d = Driver(store, interval("inner", before=0, after=0), skip_below=3)  # a cold cache
    assert [r[1] for r in d.feed([rec("a", 1, "r", 50, 3)])] == [
        {"left": "x", "right": "r"}, {"left": "y", "right": "r"}, {"left": "x", "right": "r"}]


def test_an_interval_stays_open_until_the_watermark_passes_its_end(tmp_path: Path) -> None:
    store = RocksStore(tmp_path / "s")
    d = Driver(store, interval("outer", before=10, after=20), delay_ms=100)
    assert d.feed([rec("a", 0, "L", 100, 0), rec("a", 1, "R", 200, 1)]) == []
    # the watermark is exactly at the left's interval end (120): a right record at 120 still joins
    assert d.feed([rec("z", 0, None, 220, 2)]) == [] and d.wm.current == 120
    assert d.feed([rec("a", 1, "R120", 120, 3)]) == [("a", {"left": "L", "right": "R120"}, 120, 3)]
    assert d.advance(209) == []
    # past 120 the left leaves matched (no output); past 210 the right leaves unmatched
    assert d.advance(211) == [("a", {"left": None, "right": "R"}, 200, 3)]
    d.checkpoint()
    assert list(store.items()) == []


@pytest.mark.parametrize(("kind", "expected"), [
    ("inner", []),
    ("left", [("a", {"left": "L", "right": None}, 100, 1)]),
    ("outer", [("a", {"left": "L", "right": None}, 100, 1), ("a", {"left": None, "right": "R"}, 300, 1)]),
])
def test_unmatched_records_leave_alone_by_kind(tmp_path: Path, kind: str, expected: list[Any]) -> None:
    d = Driver(RocksStore(tmp_path / "s"), interval(kind, before=10, after=20), delay_ms=0)
    assert d.feed([rec("a", 0, "L", 100, 0), rec("a", 1, "R", 300, 1)]) == expected[:1]
    assert d.advance(10**6) == expected[1:]


def test_late_records_are_dropped_and_counted(tmp_path: Path) -> None:
    store = RocksStore(tmp_path / "s")
    d = Driver(store, interval("outer", before=50, after=50), delay_ms=0)
    assert d.feed([rec("a", 1, "R", 100, 0), rec("z", 0, None, 1_000, 1)]) == [
        ("a", {"left": None, "right": "R"}, 100, 1)]
    late = rec("a", 0, "L", 999, 2)
    assert d.feed([late, rec("a", 1, None, 5, 3)]) == []  # a tombstone is ignored, not late
    assert d.op.late == [(late, 0, 0, 1_000)] and d.op.late_count == 1
    d.checkpoint()
    assert list(store.items()) == []


def test_tombstones_are_ignored(tmp_path: Path) -> None:
    store = RocksStore(tmp_path / "s")
    d = Driver(store, interval("outer"))
    assert d.feed([rec("a", 0, None, 100, 0), rec("a", 1, None, 100, 1)]) == []
    d.checkpoint()
    assert list(store.items()) == [] and d.op.late == []


def _fixed_input() -> list[Record]:
    out, base = [], T0
    for i in range(80):
        base += (i * 37) % 50
        out.append(rec(f"k{(i * 7) % 4}", (i * 5) % 3 % 2, {"i": i}, base - (i * 13) % DELAY_MS, i))
    return out


def test_a_restored_operator_continues_like_an_uninterrupted_one(tmp_path: Path) -> None:
    records, make = _fixed_input(), interval("outer", before=40, after=60)
    expected = run(tmp_path / "single", make, records, [(80, "none")])
    assert len(expected) > 40

    path = tmp_path / "s"
    store = RocksStore(path)
    d = Driver(store, make)
    got = d.feed(records[:37])
    d.checkpoint()
    wm_state, last = d.wm.state(), d.last_offset
    store.close()

    store = RocksStore(path)
    d = Driver(store, make, skip_below=37, watermark_state=wm_state)
    d.last_offset = last
    got += d.feed(records[30:])  # re-read from before the checkpoint: skip_below ignores that
    got += d.advance(records[-1][2] + 10**7)
    assert got == expected


def test_a_dirty_close_replays_to_the_same_outputs(tmp_path: Path) -> None:
    records, make = _fixed_input(), interval("left", before=30, after=0, cache=2)
    expected = run(tmp_path / "clean", make, records, [(80, "none")])
    store = RocksStore(tmp_path / "s")
    d = Driver(store, make)
    got = d.feed(records[:20])
    d.checkpoint()
    wm_state, last = d.wm.state(), d.last_offset
    d.feed(records[20:45])
    d.flush()  # flushed, never committed
    d.feed(records[45:50])
    d.op.discard()
    d = Driver(store, make, skip_below=20, watermark_state=wm_state)
    d.last_offset = last
    got += d.feed(records[20:]) + d.advance(records[-1][2] + 10**7)
    assert got == expected


def test_a_failing_record_changes_nothing(tmp_path: Path) -> None:
    store = RocksStore(tmp_path / "s")
    d = Driver(store, interval("outer"), delay_ms=0)
    batch = [rec("a", 0, "L", 100, 0), rec("a", 1, {1, 2}, 100, 1), rec("a", 1, "R", 101, 2)]
    with pytest.raises(StepFailed) as info:
        d.feed(batch)
    assert (info.value.index, info.value.record, info.value.partial) == (1, batch[1], [])
    assert isinstance(info.value.cause, TypeError)  # a set does not serialize
    # the runtime hands the record to its policy and resumes with the rest
    assert d.op.process(batch[2:]) == [("a", {"left": "L", "right": "R"}, 101, 2)]
    with pytest.raises(StepFailed, match="side must be an int"):
        d.op.process([rec("a", 2, "x", 100, 3)])
    with pytest.raises(StepFailed, match=r"\(side, value\) pair"):
        d.op.process([("a", "not a pair", 100, 4)])
    assert d.advance(10**6) == []  # no trace of the failed records: both matched ones leave quietly
    d.checkpoint()
    assert list(store.items()) == []


def test_interval_join_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="kind"):
        interval("full")(Clock())
    with pytest.raises(ValueError, match="negative"):
        interval(before=-1)(Clock())
    with pytest.raises(ValueError, match="distinct"):
        IntervalJoin(STEP, "j", KEYS.encode, KEYS.decode, Clock(), before_ms=0, after_ms=0,
                     kind="inner", names=("x", "x"))
    assert {"key", "status", "missing", "repeats"} == RESERVED_SIDE_NAMES
    assert Reconcile.__module__ == "processor.operators.reconcile"


# -- stream-table join -----------------------------------------------------------------------------


VALUES = serde_for("json")


class Table:
    """A table store of raw records: encoded key -> encoded value."""

    def __init__(self, rows: dict[Any, Any]) -> None:
        self.rows = {KEYS.encode(k): VALUES.encode(v) for k, v in rows.items()}
        self.gets: list[bytes] = []

    def get(self, key: bytes) -> bytes | None:
        self.gets.append(key)
        return self.rows.get(key)


CUSTOMERS = Table({"c1": {"name": "Ada"}, "c2": {"name": "Bob"}})


def table_join(kind: str, key: str | None = None, table: Table = CUSTOMERS) -> TableJoin:
    """A join adding the `customer` row, looked up by the record key or the `key` expression."""
    key_fn = compile_expression(key) if key is not None else None
    return TableJoin(STEP, table, key_fn, KEYS.encode, VALUES.decode, kind, "customer")


def test_inner_table_join_drops_records_without_a_row() -> None:
    batch = [("c1", {"n": 1}, 10, 0), ("c9", {"n": 2}, 11, 1), ("c2", {"n": 3}, 12, 2),
             (None, {"n": 4}, 13, 3)]
    assert table_join("inner").process(batch) == [("c1", {"n": 1, "customer": {"name": "Ada"}}, 10, 0),
                                                  ("c2", {"n": 3, "customer": {"name": "Bob"}}, 12, 2)]


def test_left_table_join_keeps_records_without_a_row() -> None:
    table = Table({"c1": {"name": "Ada"}})
    batch = [("c1", {"n": 1}, 10, 0), ("c9", {"n": 2}, 11, 1), (None, {"n": 3}, 12, 2)]
    assert table_join("left", table=table).process(batch) == [
        ("c1", {"n": 1, "customer": {"name": "Ada"}}, 10, 0), ("c9", {"n": 2, "customer": None}, 11, 1),
        (None, {"n": 3, "customer": None}, 12, 2)]
    assert table.gets == [KEYS.encode("c1"), KEYS.encode("c9")]  # a null key is not looked up


def test_table_join_on_an_expression() -> None:
    table = Table({"c1": {"name": "Ada"}})
    batch = [("o1", {"cust": "c1"}, 10, 0), ("o2", {"cust": None}, 11, 1), ("o3", {"cust": "c7"}, 12, 2)]
    assert table_join("inner", "value['cust']", table).process(batch) == [
        ("o1", {"cust": "c1", "customer": {"name": "Ada"}}, 10, 0)]
    assert table.gets == [KEYS.encode("c1"), KEYS.encode("c7")]
    assert table_join("left", "value['cust']", table).process(batch)[1:] == [
        ("o2", {"cust": None, "customer": None}, 11, 1), ("o3", {"cust": "c7", "customer": None}, 12, 2)]


def test_table_join_replaces_the_field_and_never_mutates_the_input() -> None:
    value = {"n": 1, "customer": "c1"}
    (out,) = table_join("left", "value['customer']").process([("k", value, 0, 0)])
    assert out[1] == {"n": 1, "customer": {"name": "Ada"}}
    assert value == {"n": 1, "customer": "c1"} and out[1] is not value


def test_a_value_that_is_not_a_mapping_fails_at_its_index() -> None:
    batch = [("c1", {"n": 1}, 10, 0), ("c2", 5, 11, 1), ("c2", {"n": 3}, 12, 2)]
    with pytest.raises(StepFailed) as info:
        table_join("inner").process(batch)
    failed = info.value
    assert (failed.step, failed.index, failed.record) == (STEP, 1, batch[1])
    assert failed.partial == [("c1", {"n": 1, "customer": {"name": "Ada"}}, 10, 0)]
    assert str(failed.cause) == "join adds field 'customer' to the value, which must be a mapping (got int)"
    with pytest.raises(StepFailed, match=r"\(got NoneType\)"):
        table_join("left").process([("c1", None, 0, 0)])


def test_a_failing_lookup_expression_fails_at_its_index() -> None:
    batch = [("o1", {"cust": "c1"}, 10, 0), ("o2", {}, 11, 1)]
    with pytest.raises(StepFailed) as info:
        table_join("left", "value['cust']").process(batch)
    assert info.value.index == 1 and len(info.value.partial) == 1


def test_table_join_kind_is_checked() -> None:
    with pytest.raises(ValueError, match="inner or left"):
        table_join("outer")


def test_table_join_caches_just_the_key_bytes(tmp_path: Path) -> None:
    """The lookup cache (up to 200,000 entries, outside the memory budget) holds each key it
    looked up; a JSON key encoded by orjson keeps a 4 KiB buffer, so the join keeps a copy."""
    from processor.state.table import TableStore
    from tests.traced import traced_bytes

    store = TableStore(tmp_path / "t")
    keys = 3000
    store.apply({KEYS.encode(f"c{i}"): VALUES.encode({"name": f"n{i}"}) for i in range(0, keys, 2)},
                {0: keys})
    join = TableJoin(STEP, store, None, KEYS.encode, VALUES.decode, "left", "customer")
    batch = [(f"c{i}", {"n": i}, i, i) for i in range(keys)]  # half of them without a row
    with traced_bytes() as kept:
        out = join.process(batch)
        del out
        cached = kept() / keys
    assert len(store.cache) == keys
    # measured: 4,215 bytes per cached lookup with orjson's bytes, 166 as copies
    assert cached < 1000, f"{cached:.0f} bytes per cached lookup"
    store.close()
