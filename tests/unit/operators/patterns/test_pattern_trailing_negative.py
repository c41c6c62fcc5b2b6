"""The oracle on hand-worked cases of a trailing `not_followed_by` stage: every match is
pending and goes out at its expiry (ts(first) + within) if no event before then, after its last
one, satisfied the stage; derived by hand from "A trailing negative stage" in
processor/operators/patterns/__init__.py."""

from __future__ import annotations

from typing import Any

import pytest

from processor.spec.patterns import PatternSpec
from tests.unit.operators.patterns.hand import LETTERS, indices, letter, neg, pattern, run, seq, st, x


def trailing(*stages: dict[str, Any], within: int = 10, skip: Any = "past_last_event"
             ) -> PatternSpec:
    return pattern(*stages, neg("n"), within=within, skip=skip)


def test_a_pending_match_goes_out_at_its_expiry():
    spec = trailing(st("a"), st("b"))
    events = [("a", 0), ("b", 3), ("x", 5)]
    out = run(spec, events)
    assert indices(out.matches) == [(0, 1)]
    # end is the last event's time; the record's timestamp is the expiry - 1
    assert out.match_records == [({"start": 0, "end": 3, "stages": {"a": ["a"], "b": ["b"]}}, 9)]
    assert out.timeouts == []  # (a0) is blocked by b1
    assert run(spec, events, final_watermark=9).matches == []  # not expired yet
    assert indices(run(spec, events, final_watermark=10).matches) == [(0, 1)]


def test_a_pending_match_is_blocked_by_its_negative_stage_after_its_last_event_only():
    spec = trailing(st("a"), st("b"))
    out = run(spec, [("a", 0), ("b", 3), ("n", 5)])
    assert out.matches == [] and out.timeouts == []  # (a0 b1) cannot grow: no timeout
    assert run(spec, [("a", 0), ("b", 3), ("n", 9)]).matches == []
    # before the last event nothing is forbidden (n has no stage after it to sit before)
    assert indices(run(spec, [("a", 0), ("n", 1), ("b", 3)]).matches) == [(0, 2)]


def test_the_negative_event_at_the_expiry_does_not_block():
    spec = trailing(st("a"), st("b"))
    out = run(spec, [("a", 0), ("b", 3), ("n", 10)])
    assert indices(out.matches) == [(0, 1)] and out.match_records[0][1] == 9
    # processing n at 10 is not needed to decide: the watermark at 10 emits the match
    assert indices(run(spec, [("a", 0), ("b", 3), ("n", 10)], final_watermark=10).matches) == [
        (0, 1)]


def test_the_negative_condition_sees_the_pending_candidate():
    conds = {"a": x(lambda v: v < 5), "b": x(lambda v: v >= 5),
             "n": lambda v, m, s: v > m["b"][0]}
    spec = trailing(st("a"), st("b"))
    assert run(spec, seq([1, 6, 5, 7]), conds).matches == []  # 7 > 6
    assert indices(run(spec, seq([1, 6, 5, 6]), conds).matches) == [(0, 1)]


def test_a_blocked_pending_candidate_that_can_grow_times_out():
    out = run(trailing(st("a"), st("b", one_or_more=True)), [("a", 0), ("b", 1), ("n", 2)])
    assert out.matches == []
    # (a0 b1) is no match (n2), b may still repeat: a timeout; (a0) is blocked by b1
    assert indices(out.timeouts) == [(0, 1)]
    assert out.timeout_records == [({"start": 0, "end": 1, "expired_at": 10,
                                     "stages": {"a": ["a"], "b": ["b"]}}, 9)]
    # b taking one event: (a0 b1) cannot grow, so it is not reported at all
    assert run(trailing(st("a"), st("b")), [("a", 0), ("b", 1), ("n", 2)]).timeouts == []


def test_one_or_more_before_the_trailing_negative_stage():
    spec = trailing(st("a"), st("b", one_or_more=True), skip="no_skip")
    out = run(spec, seq("abbx"))
    assert indices(out.matches) == [(0, 1), (0, 1, 2)] and out.timeouts == []
    # past_last_event: the shorter goes out first (index sequence order), q = 2 drops the longer
    spec = trailing(st("a"), st("b", one_or_more=True))
    assert indices(run(spec, seq("abbx")).matches) == [(0, 1)]
    # n after b1 blocks (a0 b1) (which cannot time out: b3 would extend it); (a0 b1 b3) is clear
    out = run(spec, seq("abnb"))
    assert indices(out.matches) == [(0, 1, 3)] and out.timeouts == []
    # n after the last b: nothing matches; (a0 b1 b2) may still take a b: a timeout
    out = run(spec, seq("abbn"))
    assert out.matches == [] and indices(out.timeouts) == [(0, 1, 2)]


def test_an_optional_last_positive_stage_before_the_trailing_negative_stage():
    spec = trailing(st("a"), st("b", optional=True), skip="no_skip")
    out = run(spec, seq("ab"))
    assert indices(out.matches) == [(0,), (0, 1)]
    assert out.match_records[0] == ({"start": 0, "end": 0, "stages": {"a": ["a"], "b": []}}, 9)
    assert indices(run(trailing(st("a"), st("b", optional=True)), seq("ab")).matches) == [(0,)]
    # n after b1 blocks (a0) and (a0 b1) alike; b may take one only: nothing grows
    out = run(spec, seq("abn"))
    assert out.matches == [] and out.timeouts == []


@pytest.mark.parametrize("skip, matches, timeouts", [
    ("no_skip", [(0, 2), (0, 3), (1, 2), (1, 3)], [(0,), (1,)]),
    ("past_last_event", [(0, 2)], []),  # q = 3 at 10: everything else starts below it
    ("to_next", [(0, 2), (1, 2)], []),  # q = 1, then 2 at 10 and 11: (a0) and (a1) are gone
])
def test_pending_matches_of_one_expiry_go_out_in_order_before_its_timeouts(skip, matches,
                                                                          timeouts):
    spec = trailing(st("a"), st("b", after="followed_by_any"), skip=skip)
    out = run(spec, [("a", 0), ("a", 1), ("b", 2), ("b", 3)])
    assert indices(out.matches) == matches
    assert [r[1] for r in out.match_records] == [9 if c[0] == 0 else 10 for c in matches]
    assert indices(out.timeouts) == timeouts  # followed_by_any: (a0), (a1) never blocked


def test_matches_of_an_expiry_raise_the_skip_point_before_its_timeouts():
    spec = trailing(st("a"), st("b", after="followed_by_any"))
    out = run(spec, [("a", 0), ("b", 1)])
    assert indices(out.matches) == [(0, 1)] and out.timeouts == []  # q = 2 when (a0) expires
    spec = trailing(st("a"), st("b", after="followed_by_any"), skip="no_skip")
    assert indices(run(spec, [("a", 0), ("b", 1)]).timeouts) == [(0,)]


def test_a_pending_match_prunes_a_candidate_completed_before_it_went_out():
    spec = trailing(st("a"), st("b"))
    events = [("a", 0), ("a", 3), ("b", 4)]
    # (a1 b2) is complete at 4, but pending until 13; (a0 b2) goes out at 10 and sets q = 3
    assert indices(run(spec, events).matches) == [(0, 2)]
    assert [r[1] for r in run(trailing(st("a"), st("b"), skip="no_skip"), events).match_records
            ] == [9, 12]
    # at watermark 12, (a1 b2) is still pending (no_skip: it would go out at 13)
    out = run(trailing(st("a"), st("b"), skip="no_skip"), events, final_watermark=12)
    assert indices(out.matches) == [(0, 2)]


def test_each_pending_candidate_is_judged_by_the_events_before_its_own_expiry():
    spec = trailing(st("a"), st("b"))
    out = run(spec, [("a", 0), ("b", 3), ("a", 10), ("b", 11), ("n", 12)])
    # (a0 b1) goes out at 10 (n4 comes after its expiry); (a2 b3) is blocked by n4
    assert indices(out.matches) == [(0, 1)] and out.timeouts == []


def test_only_the_trailing_stage_applies_to_a_pending_candidate_that_skipped_an_optional_one():
    spec = trailing(st("a"), neg("m"), st("b", optional=True), skip="no_skip")
    conds = {**LETTERS, "m": letter("m")}
    # (a0) took no b: m lies between a and b only, so it forbids nothing here
    assert indices(run(spec, seq("am"), conds).matches) == [(0,)]
    assert indices(run(spec, seq("amb"), conds).matches) == [(0,)]  # (a0 b2) passes m1
    assert indices(run(spec, seq("abm"), conds).matches) == [(0,), (0, 1)]
