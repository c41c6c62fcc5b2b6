"""The StepFailed contract that lets the runtime dead-letter one record and go on:
records before the failing one are fully processed (outputs in `partial`), the failing one
changed nothing, the rest is untouched. Checked per operator, and for windows by property:
a stream with poisoned records, resumed after each failure, gives exactly the results of the
stream with those records turned into tombstones (which advance event time but aggregate
nothing)."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processor.expressions import compile_expression
from processor.operators import Aggregate, Filter, MapValue, StepFailed
from processor.operators.fusion import fuse
from processor.operators.sink import EmitFailed, Sink
from processor.operators.stateless import PythonStep
from processor.state import RocksStore
from processor.timeutil.watermark import NO_WATERMARK
from tests.unit.operators.windows.test_windows import (
    FAST,
    FAST_ORACLE,
    FULL,
    FULL_ORACLE,
    SETTINGS,
    STRING,
    Harness,
    compiled,
    scenario,
    window_spec,
)
from tests.unit.operators.windows.window_oracle import run_oracle

POISON = {"x": "not a number"}


def resume(op: Any, batch: list[Any]) -> tuple[list[Any], list[Any]]:
    """What the task does: hand the failing record to its policy, resume with the rest."""
    out: list[Any] = []
    failed: list[Any] = []
    pending = batch
    while pending:
        try:
            out += op.process(pending)
            break
        except StepFailed as exc:
            assert exc.index >= 0 and pending[exc.index] is exc.record
            failed.append(exc.record)
            out += exc.partial
            pending = pending[exc.index + 1:]
    return out, failed


def recs(values: list[Any]) -> list[tuple[Any, Any, int, int]]:
    return [(f"k{i % 3}", v, 1000 + i, i) for i, v in enumerate(values)]


def test_fused_steps_name_the_exact_step_and_resume():
    ops = fuse([Filter("s0", compile_expression("value['a'] > 0")),
                MapValue("s1", compile_expression("{'r': 10 // value['a']}")),
                MapValue("s2", compile_expression("dict(value, b=value['r'] + 1)"))])
    assert len(ops) == 1
    batch = recs([{"a": 1}, {"b": 0}, {"a": 2}, {"a": -1}, {"a": 5}, "text", {"a": 10}])
    with pytest.raises(StepFailed) as first:
        ops[0].process(batch)
    assert (first.value.step, first.value.index, first.value.partial) == (
        "s0", 1, [("k0", {"r": 10, "b": 11}, 1000, 0)])
    out, failed = resume(ops[0], batch)
    assert [r[3] for r in failed] == [1, 5]
    assert [(r[3], r[1]["b"]) for r in out] == [(0, 11), (2, 6), (4, 3), (6, 2)]


def test_python_step_failure_keeps_order():
    def fn(key: Any, value: Any) -> list[tuple[Any, Any]]:
        if value % 4 == 3:
            raise ValueError("bad")
        return [(key, value), (key, -value)]

    batch = recs(list(range(10)))
    out, failed = resume(PythonStep("py", fn), batch)
    assert [r[3] for r in failed] == [3, 7]
    assert [r[1] for r in out] == [x for v in range(10) if v % 4 != 3 for x in (v, -v)]


def test_sink_reports_the_record_it_could_not_write():
    written: list[Any] = []

    def emit(batch: list[Any]) -> None:
        for i, r in enumerate(batch):
            if r[1] == "big":
                raise EmitFailed(i, ValueError("too large"))
            written.append(r)

    batch = recs(["a", "big", "b", "big", "c"])
    out, failed = resume(Sink("to", "t", emit), batch)
    assert [r[3] for r in failed] == [1, 3]
    assert [r[1] for r in written] == ["a", "b", "c"]
    assert [r[1] for r in out] == ["a", "b", "c"]  # what flows on after the sink


@given(values=st.lists(st.one_of(st.integers(-50, 50), st.none(), st.just("bad")), max_size=60),
       every_record=st.booleans())
def test_aggregate_skips_a_failing_record_without_changing_state(values, every_record):
    agg = compiled({"n": "count()", "s": "sum(value)", "lo": "min(value)", "avg": "avg(value)"})
    with tempfile.TemporaryDirectory() as tmp:
        store = RocksStore(Path(tmp))
        try:
            op = Aggregate("agg", "s", agg, STRING.encode,
                           "every_record" if every_record else "on_checkpoint", 100_000)
            op.bind(store)
            batch = recs(values)
            out, failed = resume(op, batch)
            emits, _ = op.flush()
        finally:
            store.close()
    assert [r[3] for r in failed] == [i for i, v in enumerate(values) if v == "bad"]
    good = [(k, v) for k, v, _, _ in batch if v is not None and v != "bad"]
    final: dict[str, dict[str, Any]] = {}
    for k in sorted({k for k, _ in good}):
        xs = [v for kk, v in good if kk == k]
        final[k] = {"n": len(xs), "s": sum(xs), "lo": min(xs), "avg": sum(xs) / len(xs)}
    last = {r[0]: r[1] for r in (out if every_record else emits)}
    assert last == final
    if every_record:
        assert [r[3] for r in out] == [i for i, v in enumerate(values) if v is not None and v != "bad"]


@pytest.mark.parametrize("kind", ["tumbling", "hopping", "sliding", "session", "count"])
@SETTINGS
@given(data=st.data())
def test_windows_resume_after_poisoned_records(kind: str, data: Any) -> None:
    sc = data.draw(scenario(kind))
    rng = random.Random(len(sc["records"]))
    poisoned = {r[3] for r in sc["records"] if r[1] is not None and rng.random() < 0.15}
    poison = {o: (r[0], POISON, r[2], o) for r in sc["records"] if (o := r[3]) in poisoned}
    fields, oracle_fields = (FULL, FULL_ORACLE) if sc["full"] else (FAST, FAST_ORACLE)
    # the oracle sees tombstones where the poison is: event time advances, nothing aggregates
    as_tombstones = [(r[0], None, r[2], r[3]) if r[3] in poisoned else r for r in sc["records"]]
    end = len(sc["records"])
    calls = {b[-1][3]: b[-1][3] for b in sc["batches"]}
    expected, expected_late = run_oracle(kind, sc["params"], as_tombstones, ooo=sc["ooo"],
                                         lateness=sc["lateness"], emit="final",
                                         fields=oracle_fields, watermark_calls=calls,
                                         final_call=end - 1)
    spec = window_spec(kind, sc["params"], sc["lateness"], "final")
    with tempfile.TemporaryDirectory() as tmp:
        h = Harness(Path(tmp), spec, fields, sc["ooo"], sc["cache"])
        try:
            out: list[Any] = []
            late: list[Any] = []
            failed: list[int] = []
            for batch in sc["batches"]:
                batch = [poison.get(r[3], r) for r in batch]
                before = h.wm.observe([r[2] for r in batch])
                h.clock.set_batch([r[3] for r in batch], before, h.wm.current)
                o, f = resume(h.op, batch)
                out += o + h.op.on_watermark(h.clock.current, batch[-1][3])
                failed += [r[3] for r in f]
                late += h.op.late
                h.op.late.clear()
                if h.wm.max_ts != NO_WATERMARK and batch[-1][3] % 2:
                    h.checkpoint()
            out += h.op.on_watermark(h.wm.current, end - 1)
        finally:
            h.close()
    assert out == expected
    # a poisoned record is either late (no open window would take it) or failed, once
    late_poison = [r[3] for r, *_ in late if r[3] in poisoned]
    assert sorted(failed + late_poison) == sorted(poisoned)
    assert [x for x in late if x[0][3] not in poisoned] == [
        x for x in expected_late if x[0][3] not in poisoned]


def test_failing_timer_is_dropped_and_the_other_due_timers_still_fire(tmp_path: Path) -> None:
    from tests.unit.operators.test_process import Driver, rec

    def fn(ctx: Any, key: Any, value: Any) -> None:
        for ts in value["at"]:
            ctx.timers.register_event_time(ts)

    def on_timer(ctx: Any, key: Any, ts: int) -> None:
        ctx.emit(("fired", ts))
        if ts == 150:
            raise RuntimeError("timer bug")

    store = RocksStore(tmp_path / "s")
    try:
        d = Driver(store, fn, on_timer)
        d.op.process([rec("a", {"at": [120, 150, 180]}, 100, 0), rec("b", {"at": [150, 170]}, 100, 1)])
        d.last_offset = 1
        fired: list[Any] = []
        failures: list[Any] = []
        d.clock.advance(500)
        while True:  # what the task does with a StepFailed that says `retry`
            try:
                fired += d.op.on_watermark(d.clock.current, 1)
                break
            except StepFailed as exc:
                assert exc.retry and exc.index == -1
                failures.append((exc.record[0], exc.record[2]))
                fired += exc.partial
        # in (time, key) order; each failing timer ran once, emitting before it raised
        assert failures == [("a", 150), ("b", 150)]
        assert [(r[0], r[1][1]) for r in fired] == [
            ("a", 120), ("a", 150), ("b", 150), ("b", 170), ("a", 180)]
        assert d.advance(1000) == []  # nothing left to fire, the failed ones included
    finally:
        store.close()
