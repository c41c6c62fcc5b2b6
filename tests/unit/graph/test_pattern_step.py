"""The pattern step in a topology: description, upgrade-check rules, failing conditions and
timeouts through the in-process driver (tasks, stores, dead letters as a worker runs them)."""

from __future__ import annotations

import pytest

from processor.graph import build_topology
from processor.graph.compat import Verdict, classify
from processor.graph.layout import state_layout
from processor.spec import load_spec_text
from processor.testing import TopologyTestDriver

BASE = """\
name: cards
sources:
  payments: {topic: payments, timestamp: {field: ts}}
pipelines:
  - from: payments
    steps:
      - pattern:
          stages:
            - {name: small, where: "value['amount'] < 2", times: {min: 2, max: 4}, greedy: true}
            - {name: no_refund, not_followed_by: "value['kind'] == 'refund'"}
            - {name: large, where: "value['amount'] > 100"}
          within: 10s
          timeouts: {topic: watch}
          late: {topic: late-payments}
          store: cards
      - to: {topic: alerts}
"""


def _driver(text: str = BASE) -> TopologyTestDriver:
    return TopologyTestDriver(load_spec_text(text, file="cards.yaml"))


def _counts(driver: TopologyTestDriver) -> list[int]:
    """[matches, timeouts] the tasks hold for the metrics export."""
    per_task = [t.pattern_counts.get("pipelines[0].steps[0]", [0, 0]) for t in driver.tasks]
    return [sum(c[0] for c in per_task), sum(c[1] for c in per_task)]


def test_describe_names_stages_quantifiers_and_side_topics():
    text = build_topology(load_spec_text(BASE)).describe()
    assert ("pattern small{2,4} !no_refund large within 10000ms, skip past_last_event, "
            "timeouts -> watch, late -> topic") in text
    assert "[timeouts to watch]" in text and "[late records to late-payments]" in text


@pytest.mark.parametrize(("old", "new", "verdict", "words"), [
    ("value['amount'] > 100", "value['amount'] > 500", Verdict.COMPATIBLE,
     "conditions of large changed"),
    ("within: 10s", "within: 20s", Verdict.COMPATIBLE, "within 10000 ms -> 20000 ms"),
    ("max: 4}", "max: 5}", Verdict.INCOMPATIBLE, "pattern stages changed"),
    ("not_followed_by:", "not_next:", Verdict.INCOMPATIBLE, "pattern stages changed"),
])
def test_upgrade_check_rules(old, new, verdict, words):
    before = state_layout(build_topology(load_spec_text(BASE)))
    after = state_layout(build_topology(load_spec_text(BASE.replace(old, new, 1))))
    result = classify(before, after)
    assert result.verdict is verdict
    assert any(words in r.render() for r in result.reasons), [r.render() for r in result.reasons]


def test_a_failing_condition_dead_letters_that_event_and_matching_goes_on():
    driver = _driver()
    try:
        for i, (amount, ts) in enumerate([(1, 1000), ("x", 1500), (1, 2000), (150, 3000)]):
            driver.pipe("payments", "c1", {"amount": amount, "kind": "pay", "n": i, "ts": ts}, ts)
        driver.pipe("payments", "c2", {"amount": 5, "kind": "pay", "ts": 60_000}, 60_000)
        driver.run()
        alerts = driver.output("alerts")
        assert [[e["n"] for e in a["value"]["stages"]["small"]] for a in alerts] == [[0, 2]]
        (letter,) = driver.output(driver.topology.dlq_topic)
        headers = letter["headers"]
        assert headers["processor.error.step"] == "pipelines[0].steps[0]"
        assert headers["processor.error.class"] == "TypeError"
        assert (headers["processor.source.offset"], headers["processor.source.timestamp"]) == (
            "1", "1500")
        assert letter["value"]["amount"] == "x"
        assert _counts(driver) == [1, 0]  # processor_pattern_matches_total / _timeouts_total
    finally:
        driver.close()


def test_timeouts_and_late_records_go_to_their_topics():
    driver = _driver()
    try:
        driver.pipe("payments", "c1", {"amount": 1, "kind": "pay", "ts": 1000}, 1000)
        driver.pipe("payments", "c1", {"amount": 1, "kind": "pay", "ts": 2000}, 2000)
        driver.pipe("payments", "c1", {"amount": 50, "kind": "refund", "ts": 3000}, 3000)
        driver.pipe("payments", "c1", {"amount": 900, "kind": "pay", "ts": 4000}, 4000)
        driver.pipe("payments", "c1", {"amount": 1, "kind": "pay", "ts": 500}, 500)  # late
        driver.pipe("payments", "c9", {"amount": 7, "kind": "pay", "ts": 30_000}, 30_000)
        driver.run()
        assert driver.output("alerts") == []  # a refund between the tests and the large one
        watch = driver.output("watch")
        assert [(w["value"]["start"], w["value"]["expired_at"], w["timestamp"]) for w in watch] == [
            (1000, 11000, 10999), (2000, 12000, 11999)]  # the tests could still grow until then
        assert [[e["ts"] for e in w["value"]["stages"]["small"]] for w in watch] == [
            [1000, 2000], [2000]]
        assert [r["value"]["ts"] for r in driver.output("late-payments")] == [500]
        assert _counts(driver) == [0, 2]
    finally:
        driver.close()


def shape(key, match, start, end):
    """A python `select`: called as fn(key, match, start, end)."""
    return {"card": key, "small": [e["amount"] for e in match["small"]], "span_ms": end - start}


def test_a_python_select_shapes_each_match():
    text = BASE.replace("          store: cards\n", "          store: cards\n          select: "
                        "{python: \"tests.unit.graph.test_pattern_step:shape\"}\n")
    driver = _driver(text)
    try:
        for amount, ts in [(1, 1000), (0.5, 2000), (1.5, 2500), (300, 4000), (9, 30_000)]:
            driver.pipe("payments", "c1", {"amount": amount, "kind": "pay", "ts": ts}, ts)
        driver.run()
        assert [(a["key"], a["value"], a["timestamp"]) for a in driver.output("alerts")] == [
            ("c1", {"card": "c1", "small": [1, 0.5, 1.5], "span_ms": 3000}, 4000)]
    finally:
        driver.close()


LOCKOUTS = """\
name: lockouts
sources:
  logins: {topic: logins, timestamp: {field: ts}}
pipelines:
  - from: logins
    steps:
      - pattern:
          stages:
            - {name: fails, where: "value['event'] == 'login_failed'", times: 2}
            - {name: no_success, not_followed_by: "value['event'] == 'login_ok'"}
          within: 1m
          timeouts: {topic: lockout-timeouts}
          late: drop
      - to: {topic: lockouts}
"""


def test_a_trailing_not_followed_by_matches_at_the_expiry_when_nothing_forbidden_came():
    driver = _driver(LOCKOUTS)
    try:
        for key, event, ts in [("u1", "login_failed", 1000), ("u2", "login_failed", 1000),
                               ("u1", "login_failed", 2000), ("u2", "login_failed", 3000),
                               ("u3", "login_failed", 5000), ("u3", "login_failed", 6000),
                               ("u2", "login_ok", 30000), ("u3", "login_ok", 65000),
                               ("u9", "logout", 200000)]:
            driver.pipe("logins", key, {"event": event, "ts": ts}, ts)
        driver.run()
        # u1: no success within a minute of its first failure; u3: its success came at the
        # expiry (65000 is not below 5000 + 60000); u2: a success in time, no lockout
        assert [(r["key"], r["timestamp"], r["value"]["start"], r["value"]["end"])
                for r in driver.output("lockouts")] == [("u1", 60999, 1000, 2000),
                                                       ("u3", 64999, 5000, 6000)]
        # u2's second failure alone could still have grown into two failures: it times out;
        # u1's and u3's are behind the matches (skip past the last event)
        assert [(r["key"], r["value"]["start"]) for r in driver.output("lockout-timeouts")] == [
            ("u2", 3000)]
    finally:
        driver.close()
