"""A task's stores and their recorded layout, on real RocksDB: the first commit records the
topology's layout; a topology that would misread the state is refused when the stores are
restored (from the local store or from the changelog's layout record), with the reasons
upgrade-check gives; a compatible change runs and records its layout; state from before
layouts is accepted and recorded."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from processor.graph import BuildContext, build_topology
from processor.graph.layout import state_layout
from processor.runtime.durability.restore import Restorer
from processor.runtime.tasks.layouts import StateLayoutMismatch
from processor.runtime.tasks.task import Task, TaskState
from processor.spec import load_spec_text
from processor.state import LAYOUT_KEY, POSITION_KEY, encode_position
from tests.unit.runtime.kafka_fakes import LogConsumer
from tests.unit.runtime.tasks.test_task_failures import Msg

BASE = """
name: shop
sources:
  orders: {topic: orders}
pipelines:
  - from: orders
    steps:
      - filter: "value['amount'] > 0"
      - aggregate:
          store: totals
          n: count()
          revenue: sum(value['amount'])
      - to: {topic: out}
"""
CHANGELOG = "shop-totals-changelog"


def _task(tmp: Path, text: str = BASE) -> tuple[Task, bytes]:
    topo = build_topology(load_spec_text(text))
    layouts = state_layout(topo).stores
    ctx = BuildContext(emitter_for=lambda end, p: (lambda records: None))
    return Task(topo.name, topo.subtopologies[0], 0, ctx, tmp, layouts), layouts["totals"].to_json()


def _run_and_commit(task: Task, offset: int = 0) -> None:
    task.process([Msg(offset, orjson.dumps({"amount": 5}), key=b"u1")])
    task.flush()
    task.committed({"totals": offset + 1})


def test_first_commit_records_the_layout_then_nothing_more(tmp_path):
    task, layout = _task(tmp_path)
    assert task.state is TaskState.RESTORING
    task.restored()
    assert task.layout_record("totals") == layout, "no layout recorded yet: write it"
    _run_and_commit(task)
    assert task.stores["totals"].layout == layout
    assert task.layout_record("totals") is None, "recorded: the next checkpoints skip it"
    assert orjson.loads(layout)["fields"][1] == {"name": "revenue", "function": "sum",
                                                 "expression": "value['amount']"}
    task.close(dirty=False)


def test_incompatible_topology_is_refused_at_restore(tmp_path):
    task, _ = _task(tmp_path)
    task.restored()
    _run_and_commit(task)
    task.close(dirty=False)
    changed, _ = _task(tmp_path, BASE.replace("revenue: sum(", "revenue: avg("))
    with pytest.raises(StateLayoutMismatch) as refused:
        changed.restored()
    message = str(refused.value)
    assert message.startswith("state of store totals (partition 0) was written with another "
                              "layout: incompatible: store totals: field 'revenue': function "
                              "sum -> avg")
    assert "\n" not in message and "new application `name:`" in message
    assert changed.state is TaskState.RESTORING, "no operator bound, no record read"
    changed.close(dirty=True)
    migration, _ = _task(tmp_path, BASE.replace("          revenue: sum(value['amount'])\n", ""))
    with pytest.raises(StateLayoutMismatch, match="needs a savepoint migration: store totals: "
                                                 "field 'revenue'"):
        migration.restored()
    migration.close(dirty=True)


def test_compatible_change_runs_and_records_its_layout(tmp_path):
    task, old = _task(tmp_path)
    task.restored()
    _run_and_commit(task)
    task.close(dirty=False)
    changed, new = _task(tmp_path, BASE.replace("sum(value['amount'])", "sum(value['amount'] * 2)"))
    assert new != old
    changed.restored()
    assert changed.state is TaskState.RUNNING
    assert changed.layout_record("totals") == new
    _run_and_commit(changed, offset=1)
    assert changed.stores["totals"].layout == new
    changed.close(dirty=False)


def test_state_from_before_layouts_is_accepted_and_recorded(tmp_path):
    task, layout = _task(tmp_path)
    task.stores["totals"].apply({b"\"u1\"": b"[1,5]"}, {"position": 1})  # no layout metadata
    task.restored()
    assert task.layout_record("totals") == layout
    _run_and_commit(task, offset=1)
    assert task.stores["totals"].layout == layout
    task.close(dirty=False)


def test_layout_record_in_the_changelog_is_restored_and_checked(tmp_path):
    _, old = _task(tmp_path / "writer")
    log = [(b"u1", b"[1,5]"), (LAYOUT_KEY, old), (POSITION_KEY, encode_position(1))]
    changed, _ = _task(tmp_path / "fresh", BASE.replace("n: count()\n          revenue",
                                                        "revenue: sum(value['amount'])\n"
                                                        "          n: count()\n          other"))
    restorer = Restorer(LogConsumer({(CHANGELOG, 0): log}),  # type: ignore[arg-type]
                        lambda task: task.restored())
    restorer.add(changed)
    with pytest.raises(StateLayoutMismatch, match="fields reordered"):
        while restorer.busy:
            restorer.step(100, 0)
    store = changed.stores["totals"]
    assert store.layout == old and dict(store.items()) == {b"u1": b"[1,5]"}, "metadata, not data"
    changed.close(dirty=True)
