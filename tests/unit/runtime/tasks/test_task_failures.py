"""A task's error policies without a broker: which failures become which dead letters, how
replayed letters are routed, and late records the late topic refuses. Messages are plain
objects with the accessors of confluent_kafka.Message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from processor.errors import RecordError
from processor.graph import BuildContext, TopicEnd, build_topology
from processor.operators.sink import EmitFailed
from processor.runtime.kafka.deadletter import REPLAY_STEP
from processor.runtime.tasks.task import Task, TaskState
from processor.spec import load_spec_text

TWO_PIPELINES = """
name: shop
sources:
  orders: {topic: orders}
pipelines:
  - from: orders
    steps:
      - map: "value['a'] * 2"
      - to: {topic: out0}
  - from: orders
    steps:
      - map: "10 // value['b']"
      - to: {topic: out1}
"""


class Msg:
    def __init__(self, offset: int, value: bytes | None, key: bytes | None = b"k",
                 headers: list[tuple[str, bytes]] | None = None, ts: int = 1000) -> None:
        self._offset, self._value, self._key, self._headers, self._ts = offset, value, key, headers, ts

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return self._key

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return (1, self._ts)


def make_task(tmp: Path, text: str, policy: str = "dlq", late_emitter: Any = None) -> tuple[Task, dict, list]:
    topo = build_topology(load_spec_text(text.replace("name: shop", f"name: shop\non_error: {policy}")))
    outputs: dict[str, list[Any]] = {}
    letters: list[Any] = []

    def emitter_for(end: TopicEnd, _partition: int) -> Any:
        return outputs.setdefault(end.topic, []).extend

    ctx = BuildContext(emitter_for=emitter_for, dead_letter=letters.append,
                       late_emitter_for=late_emitter)
    task = Task(topo.name, topo.subtopologies[0], 0, ctx, tmp)
    if task.state is TaskState.RESTORING:
        task.restored()
    return task, outputs, letters


def test_each_failure_is_one_letter_per_failing_pipeline(tmp_path):
    task, out, letters = make_task(tmp_path, TWO_PIPELINES)
    task.process([
        Msg(0, b'{"a": 1, "b": 5}'),
        Msg(1, b'{"b": 5}'),              # no a: pipeline 0 fails
        Msg(2, b'{"a": 2, "b": 0}'),      # b = 0: pipeline 1 fails
        Msg(3, b'{}', headers=[("trace", b"t3")]),  # both fail: a letter for each
        Msg(4, b'{"a": '),                # not JSON: one letter, at the source
        Msg(5, b'{"a": 3, "b": 2}'),
    ])
    assert [r[1] for r in out["out0"]] == [2, 4, 6]
    assert [r[1] for r in out["out1"]] == [2, 2, 5]
    got = sorted((lt.offset, lt.step, lt.error_class) for lt in letters)
    assert got == [(1, "pipelines[0].steps[0]", "KeyError"),
                   (2, "pipelines[1].steps[0]", "ZeroDivisionError"),
                   (3, "pipelines[0].steps[0]", "KeyError"),
                   (3, "pipelines[1].steps[0]", "KeyError"),
                   (4, "source", "DeserializationError")]
    by_offset = {lt.offset: lt for lt in letters}
    assert by_offset[3].value == b"{}" and by_offset[3].headers == [("trace", b"t3")]
    assert all(lt.payload == "source" and lt.topic == "orders" for lt in letters)
    assert task.position == 6
    assert task.failures == {("dlq", "pipelines[0].steps[0]", "KeyError"): 2,
                             ("dlq", "pipelines[1].steps[0]", "KeyError"): 1,
                             ("dlq", "pipelines[1].steps[0]", "ZeroDivisionError"): 1,
                             ("dlq", "source", "DeserializationError"): 1}


def test_a_replayed_letter_goes_only_down_the_pipeline_that_failed(tmp_path):
    task, out, letters = make_task(tmp_path, TWO_PIPELINES)
    replay = [(REPLAY_STEP, b"pipelines[1].steps[0]")]
    task.process([Msg(10, b'{"a": 1, "b": 1}'),
                  Msg(11, b'{"a": 7, "b": 5}', headers=replay),  # pipeline 0 had it already
                  Msg(12, b'{"a": 2, "b": 2}')])
    assert [r[1] for r in out["out0"]] == [2, 4]
    assert [(r[3], r[1]) for r in out["out1"]] == [(10, 10), (11, 2), (12, 5)]
    assert letters == []


@pytest.mark.parametrize("policy", ["skip", "fail"])
def test_skip_counts_and_fail_stops_with_coordinates(tmp_path, policy):
    task, out, letters = make_task(tmp_path, TWO_PIPELINES, policy)
    batch = [Msg(0, b'{"a": 1, "b": 1}'), Msg(1, b'{"b": 1}'), Msg(2, b'{"a": 1, "b": 1}')]
    if policy == "fail":
        with pytest.raises(RecordError) as stop:
            task.process(batch)
        assert (stop.value.topic, stop.value.offset, stop.value.step) == (
            "orders", 1, "pipelines[0].steps[0]")
        return
    task.process(batch)
    assert letters == [] and len(out["out0"]) == 2 and len(out["out1"]) == 3
    assert task.failures == {("skip", "pipelines[0].steps[0]", "KeyError"): 1}


def test_late_record_the_late_topic_refuses_is_dead_lettered(tmp_path):
    written: list[Any] = []

    def late_emitter_for(end: TopicEnd, partition: int, source: str, step: str) -> Any:
        def emit(late: list[Any]) -> None:
            for i, entry in enumerate(late):
                if entry[0][1].get("poison"):
                    raise EmitFailed(i, ValueError("late topic schema says no"))
                written.append(entry[0])
        return emit

    text = """
name: shop
sources:
  orders: {topic: orders, timestamp: {field: ts}}
pipelines:
  - from: orders
    steps:
      - window: {tumbling: 10ms, late: {topic: late}}
      - aggregate: {n: count()}
      - to: {topic: out}
"""
    task, _, letters = make_task(tmp_path, text, late_emitter=late_emitter_for)
    values = [{"ts": 100}, {"ts": 1}, {"ts": 2, "poison": True}, {"ts": 3}]
    task.process([Msg(i, orjson.dumps(v)) for i, v in enumerate(values)])
    assert [r[3] for r in written] == [1, 3]
    assert [(lt.offset, lt.step, lt.error_class, lt.payload) for lt in letters] == [
        (2, "pipelines[0].steps[0]", "ValueError", "derived")]
    assert orjson.loads(letters[0].value) == {"ts": 2, "poison": True}
    assert task.late_records == 3
    for store in task.stores.values():
        store.close()


def test_state_query_of_a_windowed_store_with_a_time_range(tmp_path):
    from processor.runtime.serving.queries import StateQueries
    from processor.state.partitioner import partition_for

    text = """
name: shop
sources:
  orders: {topic: orders, timestamp: {field: ts}, watermark: {max_out_of_orderness: 30ms}}
pipelines:
  - from: orders
    steps:
      - window: {tumbling: 10ms, late: drop, store: per10}
      - aggregate: {n: count()}
      - to: {topic: out}
"""
    task, _, _ = make_task(tmp_path, text)
    key = "k"
    task.process([Msg(i, orjson.dumps({"ts": ts}), key=key.encode())
                  for i, ts in enumerate([1, 2, 15, 25, 26])])
    task.flush()
    task.committed({})
    part = partition_for(b"k", 4)
    queries = StateQueries(lambda: {("orders", part): task}, {"per10": "orders"}, {"orders": 4},
                           "w1", None)
    status, body = queries.get("per10", key, False)
    assert status == 200 and [(w["window_start"], w["n"]) for w in body["value"]] == [
        (0, 2), (10, 1), (20, 2)]
    status, body = queries.get("per10", key, False, {"from": "12", "to": "20"})
    assert [(w["window_start"], w["n"]) for w in body["value"]] == [(10, 1)]
    assert queries.get("per10", key, False, {"from": "x"})[0] == 400
    elsewhere = next(k for k in ("a", "b", "c", "d", "e") if partition_for(k.encode(), 4) != part)
    assert queries.get("per10", elsewhere, False)[0] == 503  # not here, and no directory
    for store in task.stores.values():
        store.close()


BRANCHED = """
name: shop
sources:
  orders: {topic: orders}
pipelines:
  - from: orders
    steps:
      - map: "dict(value, amount=value['amount'] * 1)"
      - to: {topic: all}
      - branch:
          - when: "value['amount'] > 100"
            steps:
              - to: {topic: big}
          - when: "10 // value['amount'] > 1"
            steps:
              - map: "dict(value, small=True)"
              - to: {topic: small}
          - default:
              - to: {topic: other}
"""


def test_branch_routes_each_record_to_the_first_matching_case_or_default(tmp_path):
    task, out, letters = make_task(tmp_path, BRANCHED)
    task.process([Msg(i, orjson.dumps({"amount": a})) for i, a in enumerate([500, 2, 7, 50, 0, 1])])
    assert [v["amount"] for _, v, _, _ in out["big"]] == [500]
    assert [(v["amount"], v["small"]) for _, v, _, _ in out["small"]] == [(2, True), (1, True)]
    assert [v["amount"] for _, v, _, _ in out["other"]] == [7, 50]
    assert len(out["all"]) == 6  # the sink before the branch saw every record
    # amount 0: the second case's predicate divides by zero -> a dead letter naming the branch
    (letter,) = letters
    assert letter.offset == 4 and letter.step == "pipelines[0].steps[2]"
    assert letter.payload == "source"


def test_replayed_letter_of_a_branch_case_step_skips_sinks_above_it(tmp_path):
    task, out, letters = make_task(tmp_path, BRANCHED.replace(
        "map: \"dict(value, small=True)\"", "map: \"dict(value, small=value['flag'])\""))
    task.process([Msg(0, orjson.dumps({"amount": 2}))])  # no flag: fails in the small case
    (letter,) = letters
    assert letter.step == "pipelines[0].steps[2].branch[1].steps[0]"
    before = {topic: len(records) for topic, records in out.items()}
    task.process([Msg(1, orjson.dumps({"amount": 2, "flag": "x"}),
                      headers=[(REPLAY_STEP, letter.step.encode())])])
    new = {topic: records[before.get(topic, 0):] for topic, records in out.items()}
    assert {t: r for t, r in new.items() if r} == {
        "small": [("k", {"amount": 2, "flag": "x", "small": "x"}, 1000, 1)]}
