"""What a bounded run reports as left open: a real task over a repartition topic (windows in real
RocksDB, watermark reports from some upstream partitions only), the report's aggregation and
wording, and the operators' pending counts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from processor.graph import BuildContext, build_topology
from processor.operators.patterns import build_pattern_operator
from processor.operators.process import ProcessFunction
from processor.runtime.tasks.open_work import Holdback, OpenWork, collect, format_time
from processor.runtime.tasks.task import Task, TaskState
from processor.spec import load_spec_text
from processor.spec.patterns import PatternSpec
from processor.state import RocksStore
from processor.timeutil.watermark import Clock
from tests.unit.operators.windows.test_windows import FAST, STRING, Harness, window_spec
from tests.unit.runtime.tasks.test_task_failures import Msg

WINDOWS = """
name: idle
sources:
  orders: {topic: orders, partitions: 4, timestamp: {field: ts}}
pipelines:
  - from: orders
    steps:
      - key_by: "value['country']"
      - window: {tumbling: 1s, emit: final, late: drop}
      - aggregate: {orders: count()}
      - to: {topic: out, partitions: 1}
"""


def windowed_task(tmp: Path) -> Task:
    topo = build_topology(load_spec_text(WINDOWS))
    repartitioned = topo.subtopologies[1]
    assert repartitioned.source.internal
    ctx = BuildContext(emitter_for=lambda end, p: (lambda batch: None),
                       partitions_of=lambda topic: 4)
    task = Task(topo.name, repartitioned, 0, ctx, tmp)
    if task.state is TaskState.RESTORING:
        task.restored()
    return task


def record(offset: int, slot: int, country: str, ts: int) -> Msg:
    value = orjson.dumps([slot, offset, 0, {"country": country, "ts": ts}])
    return Msg(offset, value, key=orjson.dumps(country), ts=ts)


def report(offset: int, slot: int, watermark: int | None) -> Msg:
    return Msg(offset, orjson.dumps([slot, watermark]), key=None)


def commit(task: Task) -> None:
    task.flush()
    task.committed({})


def test_silent_upstream_partitions_are_named_and_the_open_windows_counted(tmp_path):
    task = windowed_task(tmp_path)
    try:
        task.process([record(0, 0, "de", 1_500), record(1, 1, "fr", 2_500),
                      record(2, 0, "de", 3_200), report(3, 0, 3_200), report(4, 1, 2_500)])
        commit(task)
        pending, held = task.open_work()
        # slots 2 and 3 never reported: the watermark stays at its start, all 3 windows open
        assert pending == {"pipelines[0].steps[1]": {"windows": 3}}
        assert held == [Holdback("orders[2]", None, 3_200), Holdback("orders[3]", None, 3_200)]
        # they go idle: the slowest reporting partition now sets the watermark (2_500),
        # which closes [1000, 2000); orders[1] is behind orders[0]
        task.process([report(5, 2, None), report(6, 3, None)])
        commit(task)
        pending, held = task.open_work()
        assert pending == {"pipelines[0].steps[1]": {"windows": 2}}
        assert held == [Holdback("orders[1]", 2_500, 3_200)]
        # every upstream partition idle: nothing holds the watermark any more; it moves to the
        # highest reported (3_200), and only [3000, 4000) is still open
        task.process([report(7, 0, None), report(8, 1, None)])
        commit(task)
        pending, held = task.open_work()
        assert held == [] and pending == {"pipelines[0].steps[1]": {"windows": 1}}
    finally:
        task.close(dirty=False)


UNTIMED = WINDOWS.replace("      - window: {tumbling: 1s, emit: final, late: drop}\n", "")


def test_a_task_whose_results_do_not_wait_for_event_time_names_no_partition(tmp_path):
    """An aggregate without a window after a repartition: its upstream marks are not
    checkpointed (nothing waits for them), so naming silent partitions after a restore would
    point at a cause that does not exist (seen in a fault campaign's drain report)."""
    topo = build_topology(load_spec_text(UNTIMED))
    ctx = BuildContext(emitter_for=lambda end, p: (lambda batch: None),
                       partitions_of=lambda topic: 4)
    task = Task(topo.name, topo.subtopologies[1], 0, ctx, tmp_path)
    if task.state is TaskState.RESTORING:
        task.restored()
    try:
        task.process([record(0, 0, "de", 1_500), report(1, 0, 1_500)])
        commit(task)
        assert task.open_work() == ({}, [])
        assert task.silent_upstream() == []
    finally:
        task.close(dirty=False)


def test_collect_sums_steps_over_tasks_and_names_each_partition_once():
    class Done:
        def __init__(self, pending: dict[str, dict[str, int]], held: list[Holdback]) -> None:
            self.result = pending, held

        def open_work(self) -> tuple[dict[str, dict[str, int]], list[Holdback]]:
            return self.result

    silent = [Holdback("in[3]", None, 9_000), Holdback("in[10]", None, 9_000)]
    got = collect([Done({"w": {"windows": 2}}, silent),
                   Done({"w": {"windows": 3}, "p": {"event_time timers": 4,
                                                     "processing_time timers": 1}}, silent[:1])])
    assert got.pending == {"w": {"windows": 5},
                           "p": {"event_time timers": 4, "processing_time timers": 1}}
    assert [h.partition for h in got.held_back_by] == ["in[3]", "in[10]"]  # by partition number
    assert (got.windows, got.timers) == (5, 5)
    assert got.message() == (
        "bounded run ended with 5 windows open and 5 timers pending; watermark held back by "
        "in[3] never heard from (no record, no idle_timeout), others at "
        f"{format_time(9_000)}, in[10] never heard from (no record, no idle_timeout), others at "
        f"{format_time(9_000)}")
    fields = got.fields()
    assert fields["open_windows"] == 5 and fields["pending_timers"] == 5
    assert fields["watermark_held_back_by"][0] == {"partition": "in[3]", "watermark": None,
                                                   "others": 9_000}
    text = got.render().splitlines()
    assert text[0] == "bounded run ended with 5 windows open and 5 timers pending:"
    assert "  step w: 5 windows" in text
    assert "  step p: 4 event_time timers, 1 processing_time timers" in text
    assert "    in[10] never heard from" in "\n".join(text)


def test_an_empty_report_says_so():
    empty = OpenWork()
    assert empty.empty and empty.message() == "bounded run ended with nothing open"
    assert OpenWork({"w": {"windows": 1}}).message() == (
        "bounded run ended with 1 window open and 0 timers pending")
    assert format_time(1_700_000_000_123) == "2023-11-14T22:13:20.123Z"
    assert Holdback("t[0]", 1_000, 2_000).describe() == (
        "t[0] at 1970-01-01T00:00:01.000Z, others at 1970-01-01T00:00:02.000Z")


@pytest.mark.parametrize(("kind", "params", "open_"), [
    ("tumbling", {"size": 10}, 2), ("hopping", {"size": 10, "advance": 5}, 4),
    ("session", {"gap": 5}, 2), ("sliding", {"span": 5}, None), ("count", {"size": 3}, 2),
])
def test_window_operators_count_their_committed_open_windows(tmp_path, kind, params, open_):
    h = Harness(tmp_path, window_spec(kind, params), FAST, 0)
    try:
        h.run([("a", {"x": 1}, 1, 0), ("b", {"x": 5}, 2, 1), ("a", {"x": 2}, 3, 2)], False)
        assert h.op.pending() == {"windows": 0}  # nothing committed yet
        h.checkpoint()
        listed = sum(len(h.op.read(h.store, STRING.encode(k))) for k in "ab")
        assert h.op.pending() == {"windows": listed}
        if open_ is not None:
            assert listed == open_
    finally:
        h.close()


def test_process_function_counts_committed_timers_per_domain(tmp_path: Path) -> None:
    def fn(ctx: Any, key: Any, value: Any) -> None:
        ctx.timers.register_event_time(value)
        ctx.timers.register_processing_time(value + 1)

    store = RocksStore(tmp_path / "s")
    clock = Clock()
    op = ProcessFunction("p", "st", fn, lambda *a: None, STRING.encode, STRING.decode, clock,
                         now_ms=lambda: 0)
    try:
        op.bind(store)
        clock.set_batch([0, 1, 2], [0, 0, 0], 0)
        op.process([("a", 100, 0, 0), ("b", 200, 0, 1), ("b", 300, 0, 2)])
        _, writes = op.flush()
        store.apply(writes, {})
        op.committed()
        assert op.pending() == {"event_time timers": 3, "processing_time timers": 3}
    finally:
        store.close()


def test_open_pattern_keys_are_counted_and_named():
    report = OpenWork({"pipelines[0].steps[0]": {"pattern keys": 3}})
    assert not report.empty and report.pattern_keys == 3
    assert report.message() == ("bounded run ended with 0 windows open and 0 timers pending, "
                                "3 pattern keys with buffered events or partial matches")
    assert report.fields()["open_pattern_keys"] == 3
    assert "  step pipelines[0].steps[0]: 3 pattern keys" in report.render().splitlines()


def test_a_pattern_step_counts_its_committed_open_keys(tmp_path: Path) -> None:
    spec = PatternSpec.model_validate({
        "stages": [{"name": "a", "where": "value == 1"}, {"name": "b", "where": "value == 2"}],
        "within": 100, "timeouts": "drop", "late": "drop"})
    store = RocksStore(tmp_path / "s")
    clock = Clock()
    op = build_pattern_operator("p", "st", spec, STRING.encode, STRING.decode, clock)
    try:
        op.bind(store)
        clock.set_batch([0, 1, 2], [0, 0, 0], 10)
        op.process([("a", 1, 5, 0), ("b", 1, 6, 1), ("c", 3, 20, 2)])  # c: buffered
        op.on_watermark(10, 2)
        _, writes = op.flush()
        store.apply(writes, {})
        op.committed()
        assert op.pending() == {"pattern keys": 3}
        op.on_watermark(1 << 62, 2)  # the end of a bounded run: everything expires
        _, writes = op.flush()
        store.apply(writes, {})
        op.committed()
        assert op.pending() == {"pattern keys": 0}
    finally:
        store.close()
