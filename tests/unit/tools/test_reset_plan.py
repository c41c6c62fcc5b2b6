"""`processor reset`'s planning without a broker: which topics it moves, deletes and keeps for
the example topologies, one offset move per input partition, the target of the flags, and the
plan as printed."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from processor.errors import ProcessorError
from processor.graph import build_topology
from processor.spec import load_spec
from processor.tools.reset import (
    OffsetMove,
    ResetPlan,
    Target,
    committed_to_drop,
    group_inputs,
    internal_topics,
    kept_topics,
    parse_target,
    plan_moves,
)
from tests.paths import REPO


def _topology(name: str):
    return build_topology(load_spec(str(REPO / "topologies" / f"{name}.yaml")))


def test_a_stateful_topology_loses_its_changelog_and_repartition_topics() -> None:
    topo = _topology("revenue_per_user")
    assert group_inputs(topo) == ["orders"]
    internal = ["revenue-per-user-totals-changelog", "revenue-per-user-totals-repartition",
                "revenue-per-user-workers"]
    assert internal_topics(topo, delete_dlq=False) == internal
    assert internal_topics(topo, delete_dlq=True) == [*internal, "revenue-per-user-dlq"]
    assert kept_topics(topo, delete_dlq=False) == {
        "revenue-per-user": "sink",
        "revenue-per-user-dlq": "dead letters (--delete-dlq deletes them)"}
    assert kept_topics(topo, delete_dlq=True) == {"revenue-per-user": "sink"}


def test_tables_and_broadcasts_are_kept_and_not_moved() -> None:
    """They are read without the consumer group: no position of the group to move."""
    topo = _topology("fraud_detection")
    assert group_inputs(topo) == ["transactions"]
    assert internal_topics(topo, delete_dlq=False) == ["fraud-detection-workers"]
    kept = kept_topics(topo, delete_dlq=False)
    assert kept["fraud-alerts"] == kept["transactions-scored"] == "sink"
    assert kept["customers"].startswith("table input") and kept["fraud-rules"].startswith("table")


def test_two_inputs_one_move_per_partition() -> None:
    topo = _topology("reconciliation")
    assert group_inputs(topo) == ["orders", "payments"]
    moves = plan_moves({"payments": 1, "orders": 2}, {("orders", 0): 40, ("payments", 0): 7},
                       {("orders", 0): 0, ("orders", 1): 0, ("payments", 0): 3})
    assert moves == [OffsetMove("orders", 0, 40, 0), OffsetMove("orders", 1, None, 0),
                     OffsetMove("payments", 0, 7, 3)]


def test_committed_offsets_on_deleted_topics() -> None:
    committed = {("orders", 0): 5, ("app-s-repartition", 1): 9, ("app-s-repartition", 0): 3}
    assert committed_to_drop(committed, ["app-s-repartition", "app-s-changelog"]) == [
        ("app-s-repartition", 0), ("app-s-repartition", 1)]


def test_targets() -> None:
    assert parse_target().kind == "earliest"
    assert parse_target(to_latest=True).kind == "latest"
    at = parse_target(to_datetime="2026-01-31T12:00:00Z")
    assert (at.kind, at.timestamp_ms) == ("timestamp", 1_769_860_800_000)
    assert parse_target(to_datetime="2026-01-31T12:00:00").timestamp_ms == at.timestamp_ms, \
        "no zone: UTC"
    assert parse_target(to_datetime="2026-01-31T13:00:00+01:00").timestamp_ms == at.timestamp_ms
    assert parse_target(by_duration_ms=3_600_000, now_ms=10_000_000).timestamp_ms == 6_400_000
    assert at.describe() == "the first record at or after 2026-01-31T12:00:00.000+00:00"
    with pytest.raises(ProcessorError, match="--to-datetime 'yesterday': expected an ISO 8601"):
        parse_target(to_datetime="yesterday")


def test_the_printed_plan() -> None:
    plan = ResetPlan("app", "earliest", [OffsetMove("orders", 0, 40, 0),
                                         OffsetMove("orders", 1, None, 0)],
                     ["app-s-changelog"], {"out": "sink"}, Path("state/app"), True, dry_run=True,
                     dropped_offsets=[("app-s-repartition", 0)])
    assert plan.render().splitlines() == [
        "dry run, nothing changed: reset of 'app' (consumer group app) to earliest",
        "input offsets to set:",
        "  orders[0]: 40 -> 0",
        "  orders[1]: none -> 0",
        "topics to delete: app-s-changelog",
        "committed offsets dropped with them: app-s-repartition[0]",
        "topic kept: out (sink)",
        "local state state/app: to remove (workers on other machines clear their stores of "
        "this application when they restore)"]
    data = orjson.loads(plan.as_json())
    assert data["moves"][1] == {"topic": "orders", "partition": 1, "old": None, "new": 0}
    assert data["delete"] == ["app-s-changelog"] and data["state_dir"] == "state/app"
    plan.dry_run = False
    assert plan.render().splitlines()[:2] == ["reset 'app' (consumer group app) to earliest",
                                              "input offsets set:"]


def test_the_plan_to_a_savepoint() -> None:
    """`reset --to-savepoint`: the group is deleted and the restore commits the savepoint's
    offsets; a partition the savepoint has none for gets no move."""
    target = Target("savepoint", savepoint="sp", offsets={("orders", 0): 7})
    moves = plan_moves({"orders": 2}, {("orders", 0): 9, ("orders", 1): 3}, {("orders", 0): 7})
    plan = ResetPlan("app", target.describe(), moves, [], {}, Path("state/app"), False,
                     dry_run=True, delete_group=True)
    assert plan.render().splitlines()[:4] == [
        "dry run, nothing changed: reset of 'app' (consumer group app) to the offsets of "
        "savepoint sp",
        "consumer group app: to delete (a restore goes into an application without committed "
        "offsets)",
        "input offsets the restore commits:",
        "  orders[0]: 9 -> 7"]
