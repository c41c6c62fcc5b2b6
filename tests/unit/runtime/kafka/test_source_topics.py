"""Which missing source topics the worker creates (declared `partitions:` and
create_source_topics on), which it waits for, and what it says about them; the partition counts
a topology declares per source topic, every kind of source included."""

from __future__ import annotations

import pytest

from processor.errors import SpecErrors
from processor.graph import build_topology
from processor.runtime.kafka.topics import (
    create_command,
    missing_sources,
    partition_mismatches,
    plan_sources,
)
from processor.spec import load_spec_text

BS = "kafka:9092"
SETTING = "create_source_topics: true (PROCESSOR_CREATE_SOURCE_TOPICS=true, --create-source-topics)"

ALL_KINDS = """\
name: kinds
sources:
  orders: {topic: orders, partitions: 6}
  customers: {topic: customers, kind: table, partitions: 6}
  countries: {topic: countries, kind: global_table, partitions: 1}
  rules: {topic: rules, kind: broadcast}
  unused: {topic: unused, partitions: 3}
pipelines:
  - from: orders
    steps:
      - join: {table: customers}
      - join: {table: countries, key: "value['country']"}
      - to: {topic: out, partitions: 2}
"""


def test_the_topology_carries_declared_partitions_of_every_kind_of_source():
    topo = build_topology(load_spec_text(ALL_KINDS))
    assert topo.source_partitions == {"orders": 6, "customers": 6, "countries": 1, "unused": 3}
    # the worker considers the topics it reads: streams, joined tables, global tables and
    # broadcasts; a source no pipeline reads is neither created nor waited for
    assert sorted(topo.input_topics) == ["countries", "customers", "orders", "rules"]
    plan = plan_sources(topo.input_topics, topo.source_partitions, {}, create=True)
    assert plan.create == {"orders": 6, "customers": 6, "countries": 1}
    assert plan.waiting == ["rules"]


def test_two_sources_of_one_topic_must_declare_the_same_count():
    text = ALL_KINDS.replace("unused: {topic: unused, partitions: 3}",
                             "again: {topic: orders, partitions: 3}")
    with pytest.raises(SpecErrors) as info:
        build_topology(load_spec_text(text))
    (error,) = info.value.errors
    assert "topic 'orders' is declared with 6 partitions by another source" in str(error)
    assert error.line == 7


def test_only_missing_declared_topics_are_created_and_only_when_allowed():
    declared = {"a": 4, "b": 2}
    counts = {"b": 8, "x": 1}
    on = plan_sources(["a", "b", "c"], declared, counts, create=True)
    assert (on.create, on.waiting) == ({"a": 4}, ["c"])  # b exists: left as it is
    off = plan_sources(["a", "b", "c"], declared, counts, create=False)
    assert (off.create, off.waiting) == ({}, ["a", "c"])
    done = plan_sources(["b"], declared, counts, create=False)
    assert (done.create, done.waiting) == ({}, [])


def test_existing_topics_with_another_count_than_declared_are_reported():
    assert partition_mismatches(["a", "b", "c"], {"a": 4, "b": 2, "c": 3},
                                {"a": 4, "b": 8}) == [("b", 8, 2)]
    assert partition_mismatches(["a"], {}, {"a": 4}) == []


def test_the_command_uses_the_declared_count_else_one():
    assert create_command("orders", BS) == \
        "processor topics create orders --partitions 1 --bootstrap-servers kafka:9092"
    assert create_command("orders", BS, 6) == \
        "processor topics create orders --partitions 6 --bootstrap-servers kafka:9092"


def test_undeclared_topic_names_both_ways_out():
    command = create_command("orders", BS)
    waiting, error = missing_sources(["orders"], {}, create=False, bootstrap_servers=BS)
    assert waiting == (f"waiting for source topic(s) orders: create them with {command}, or "
                       f"declare `partitions:` on the source of orders and set {SETTING} for "
                       "the worker to create them")
    assert error == ("source topic(s) orders do not exist: create them (choose the partition "
                     "count: the tasks' parallelism), or declare `partitions:` on the source of "
                     f"orders and set {SETTING} for the worker to create them. The command: "
                     f"{command}")


def test_undeclared_topic_with_the_setting_on_asks_for_partitions_only():
    waiting, error = missing_sources(["orders"], {}, create=True, bootstrap_servers=BS)
    other = ("or declare `partitions:` on the source of orders for the worker to create them "
             "(create_source_topics is on)")
    assert waiting.endswith(f"{create_command('orders', BS)}, {other}")
    assert f", {other}. The command: " in error and SETTING not in error
    assert error.endswith(create_command("orders", BS))


def test_declared_topic_with_the_setting_off_mentions_the_setting():
    waiting, error = missing_sources(["orders"], {"orders": 6}, create=False,
                                     bootstrap_servers=BS)
    command = create_command("orders", BS, 6)
    assert waiting == (f"waiting for source topic(s) orders: create them with {command}, or set "
                       f"{SETTING} for the worker to create them as declared")
    assert error == (f"source topic(s) orders do not exist: create them, or set {SETTING} for "
                     f"the worker to create them as declared. The command: {command}")


def test_several_topics_each_get_their_command():
    waiting, error = missing_sources(["a", "b"], {"a": 3}, create=False, bootstrap_servers=BS)
    how = f"{create_command('a', BS, 3)}; {create_command('b', BS)}"
    assert waiting.startswith(f"waiting for source topic(s) a, b: create them with {how}, ")
    assert "declare `partitions:` on the source of b and set" in waiting
    assert error.startswith("source topic(s) a, b do not exist: create them (choose")
    assert error.endswith(f"The command: {how}")
