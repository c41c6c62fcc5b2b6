"""`--start` / `--end SOURCE=POINT` (spec/bound_overrides.py): parsing points, overriding a
source's `bounded:`, and the errors a user sees (one line, exit 2)."""

from __future__ import annotations

import pytest

from processor.cli import main
from processor.errors import ProcessorError
from processor.spec import load_spec_text
from processor.spec.bound_overrides import (
    bounded_topics,
    parse_override,
    parse_point,
    with_bounds,
)
from processor.spec.bounded import Bound, BoundedSpec

SPEC = """
name: shop
sources:
  orders:
    topic: orders
    bounded: {start: {offsets: {0: 5}}}
  clicks: {topic: clicks}
  users: {topic: users, kind: table}
pipelines:
  - from: [orders, clicks]
    steps:
      - to: {topic: out}
"""


def test_points():
    assert parse_point("earliest") == "earliest"
    assert parse_point("latest") == "latest"
    assert parse_point("1700000000000") == Bound(timestamp=1_700_000_000_000)
    assert parse_point("2023-11-14T22:13:20Z") == Bound(timestamp=1_700_000_000_000)
    assert parse_point("0:120,1:98") == Bound(offsets={0: 120, 1: 98})
    assert parse_point("3:0") == Bound(offsets={3: 0})


@pytest.mark.parametrize(("text", "message"), [
    ("yesterday", "not an ISO-8601 time or epoch milliseconds: 'yesterday'"),
    ("0:1,0:2", "partition 0 is given twice"),
    ("0:1,", "not an ISO-8601 time or epoch milliseconds: '0:1,'"),
])
def test_bad_points(text, message):
    with pytest.raises(ValueError, match=message):
        parse_point(text)


def test_override_syntax():
    assert parse_override("orders=latest", "--end") == ("orders", "latest")
    with pytest.raises(ProcessorError, match=r"--end 'orders': expected SOURCE=POINT"):
        parse_override("orders", "--end")
    with pytest.raises(ProcessorError, match=r"--start 'orders=soon': not an ISO-8601"):
        parse_override("orders=soon", "--start")


def test_with_bounds_overrides_one_side_and_adds_a_range():
    loaded = load_spec_text(SPEC)
    out = with_bounds(loaded, {"clicks": Bound(timestamp=1_000)},
                      {"orders": Bound(offsets={0: 9})})
    assert out.spec.sources["orders"].bounded == BoundedSpec(
        start=Bound(offsets={0: 5}), end=Bound(offsets={0: 9}))
    assert out.spec.sources["clicks"].bounded == BoundedSpec(start=Bound(timestamp=1_000))
    assert loaded.spec.sources["clicks"].bounded is None, "the original is left alone"
    assert bounded_topics(out.spec) == {
        "orders": ("orders", out.spec.sources["orders"].bounded),
        "clicks": ("clicks", out.spec.sources["clicks"].bounded)}
    assert with_bounds(loaded, {}, {}) is loaded


@pytest.mark.parametrize(("starts", "ends", "message"), [
    ({"nope": "earliest"}, {}, "--start nope=...: no source 'nope' (sources: orders, clicks, users)"),
    ({}, {"users": "latest"}, "--end users=...: source 'users' reads a table; only a stream"),
    ({"clicks": "latest"}, {}, "source 'clicks': a range cannot start at `latest`"),
    ({}, {"clicks": "earliest"}, "source 'clicks': a range cannot end at `earliest`"),
])
def test_with_bounds_errors(starts, ends, message):
    with pytest.raises(ProcessorError) as exc:
        with_bounds(load_spec_text(SPEC), starts, ends)
    assert str(exc.value).startswith(message)


def test_one_topic_read_with_two_ranges_is_refused():
    spec = load_spec_text(SPEC.replace("topic: clicks", "topic: orders")).spec
    with pytest.raises(ProcessorError, match="reads topic 'orders' unbounded, source 'orders'"):
        bounded_topics(spec)


def test_validate_accepts_a_bounded_source(tmp_path, capsys):
    path = tmp_path / "shop.yaml"
    path.write_text(SPEC.replace("bounded: {start: {offsets: {0: 5}}}",
                                 "bounded: {start: {timestamp: '2024-01-01T00:00:00Z'}, "
                                 "end: latest}"))
    assert main(["validate", str(path)]) == 0
    assert capsys.readouterr().out.startswith("ok: ")


@pytest.mark.parametrize(("flags", "message"), [
    (["--start", "nope=earliest"], "error: --start nope=...: no source 'nope'"),
    (["--end", "orders=0:1:2"], "error: --end 'orders=0:1:2': not an ISO-8601"),
    (["--end", "orders=5", "--end", "orders=6"], "error: --end is given twice for source"),
])
def test_run_refuses_bad_bounds_with_one_error_line(tmp_path, capsys, flags, message):
    path = tmp_path / "shop.yaml"
    path.write_text(SPEC)
    # the bounds are checked before any Kafka client exists: no broker is needed
    assert main(["run", str(path), "--bootstrap-servers", "127.0.0.1:1", *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(message), err
