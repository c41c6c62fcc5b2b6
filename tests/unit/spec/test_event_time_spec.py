"""Event-time YAML: windows, watermarks, timestamps and process steps — valid forms, the
topology graph they build, and errors that point at the line and field."""

from __future__ import annotations

import pytest

from processor.errors import SpecError, SpecErrors
from processor.graph import build_topology
from processor.spec import load_spec_text

HEAD = """\
name: t
sources:
  clicks:
    topic: clicks
    timestamp: {field: ts}
    watermark: {max_out_of_orderness: 5s, idle_timeout: 30s}
pipelines:
  - from: clicks
    steps:
"""
# the first step is on line 10


def topology(*steps: str) -> str:
    return HEAD + "".join(f"      {s}\n" for s in steps)


def errors_of(text: str) -> list[SpecError]:
    with pytest.raises(SpecErrors) as info:
        build_topology(load_spec_text(text, file="t.yaml"))
    return info.value.errors


def one_error(text: str) -> SpecError:
    errs = errors_of(text)
    assert len(errs) == 1, [str(e) for e in errs]
    return errs[0]


WINDOWS = [
    "{tumbling: 1m, late: drop}",
    "{hopping: {size: 1m, advance: 10s}, allowed_lateness: 5s, late: drop}",
    "{sliding: 30s, emit: updates, late: drop}",
    "{session: 30m, late: {topic: late-clicks, partitions: 2}}",
    "{session: {gap: 5m}, late: drop}",
    "{count: 100, late: drop}",
    "{count: {size: 10, slide: 5}, late: drop}",
]


@pytest.mark.parametrize("window", WINDOWS)
def test_every_window_kind_builds(window):
    topo = build_topology(load_spec_text(topology(
        f"- window: {window}", "- aggregate: {n: count(), total: \"sum(value['x'])\"}",
        "- to: {topic: out, partitions: 1}")))
    (sub,) = topo.subtopologies
    assert sub.stores[0].changelog_topic == "t-window-0-0-changelog"
    assert sub.source.max_out_of_orderness_ms == 5000 and sub.source.idle_timeout_ms == 30000
    assert "window" in topo.describe()


def test_window_after_key_change_repartitions_and_names_its_feeder():
    topo = build_topology(load_spec_text(topology(
        "- key_by: \"value['user']\"", "- window: {tumbling: 1s, store: per-second, late: drop}",
        "- aggregate: {n: count()}", "- to: {topic: out, partitions: 1}")))
    first, second = topo.subtopologies
    assert first.sinks[0].topic == "t-per-second-repartition"
    assert second.source.internal and second.source.upstream_topics == ("clicks",)
    assert second.stores[0].name == "per-second"


def test_late_topic_is_a_sink_of_the_subtopology():
    topo = build_topology(load_spec_text(topology(
        "- window: {tumbling: 1s, late: {topic: too-late, partitions: 3}}",
        "- aggregate: {n: count()}", "- to: {topic: out, partitions: 1}")))
    assert {e.topic for e in topo.subtopologies[0].sinks} == {"out", "too-late"}
    assert "late records to too-late" in topo.describe()


def test_process_step_builds_with_store_and_repartition():
    topo = build_topology(load_spec_text(topology(
        "- key_by: \"value['user']\"", "- process: {python: 'json:dumps', on_timer: 'json:loads'}",
        "- to: {topic: out, partitions: 1}")))
    assert [s.name for s in topo.stores] == ["process-0-1"]
    assert topo.subtopologies[0].sinks[0].topic == "t-process-0-1-repartition"


@pytest.mark.parametrize(("steps", "line", "field", "message"), [
    (["- window: {tumbling: 1m, session: 5m, late: drop}"], 10, "pipelines[0].steps[0].window",
     "exactly one of"),
    (["- window: {late: drop}"], 10, "pipelines[0].steps[0].window", "exactly one of"),
    (["- window: {tumbling: 1m}"], 10, "pipelines[0].steps[0].window", "late: drop"),
    (["- window: {tumbling: 5 parsecs, late: drop}"], 10, "pipelines[0].steps[0].window.tumbling",
     "not a duration"),
    (["- window: {hopping: {size: 10s, advance: 1m}, late: drop}"], 10,
     "pipelines[0].steps[0].window.hopping", "must not exceed size"),
    (["- window: {count: {size: 3, slide: 5}, late: drop}"], 10,
     "pipelines[0].steps[0].window.count", "must not exceed size"),
    (["- window: {tumbling: 1m, emit: sometimes, late: drop}"], 10,
     "pipelines[0].steps[0].window.emit", "final"),
    (["- window: {tumbling: 1m, late: drop}", "- filter: 'True'"], 10,
     "pipelines[0].steps[0].window", "followed by an aggregate"),
    (["- window: {tumbling: 1m, late: drop}"], 10,
     "pipelines[0].steps[0].window", "followed by an aggregate"),
    (["- window: {tumbling: 1m, late: drop}", "- aggregate: {n: count(), emit: every_record}"],
     11, "pipelines[0].steps[1].aggregate.emit", "window.emit"),
    (["- window: {tumbling: 1m, late: drop, store: a}", "- aggregate: {n: count(), store: b}"],
     11, "pipelines[0].steps[1].aggregate.store", "two store names"),
    (["- window: {session: 1m, late: drop}",
      "- aggregate: {n: {python: 'json:dumps', initial: 0}}"],
     11, "pipelines[0].steps[1].aggregate", "merge"),
    (["- window: {count: 5, late: drop}", "- aggregate: {window_end: count()}"], 11,
     "pipelines[0].steps[1].aggregate.window_end", "part of every window result"),
    (["- process: {python: 'no_such_module_xyz:f'}"], 10,
     "pipelines[0].steps[0].process.python", "cannot import"),
    (["- process: 'json:dumps'", "- process: {python: 'json:dumps', store: process-0-0}"], 11,
     "pipelines[0].steps[1].process.store", "used twice"),
])
def test_errors_point_at_line_and_field(steps, line, field, message):
    err = one_error(topology(*steps))
    assert err.file == "t.yaml" and err.line == line, str(err)
    assert err.path == field, str(err)
    if message:
        assert message in err.message, str(err)


@pytest.mark.parametrize(("source", "field", "message"), [
    ("{topic: c, timestamp: {field: ts, unit: fortnights}}", "sources.c.timestamp.unit", "iso"),
    ("{topic: c, watermark: {idle_timeout: 0s}}", "sources.c.watermark.idle_timeout", "positive"),
    ("{topic: c, watermark: {max_out_of_orderness: soon}}",
     "sources.c.watermark.max_out_of_orderness", "not a duration"),
])
def test_source_time_errors(source, field, message):
    text = f"name: t\nsources:\n  c: {source}\npipelines:\n  - from: c\n    steps:\n      - to: x\n"
    err = errors_of(text)[0]
    assert err.line == 3 and err.path == field and message in err.message, str(err)
