"""The oracle on hand-worked cases: each expected result is derived from the written semantics
(processor/operators/patterns/__init__.py) by hand, so these pin what the oracle (and through
it the operator) takes the semantics to be."""

from __future__ import annotations

import pytest

from processor.timeutil.watermark import NO_WATERMARK
from tests.unit.operators.patterns.hand import LETTERS, indices, neg, pattern, run, seq, st, x
from tests.unit.operators.patterns.pattern_oracle import run_oracle

# -- contiguity -------------------------------------------------------------------------------


def test_followed_by_takes_the_first_event_satisfying_the_stage():
    out = run(pattern(st("a"), st("b")), seq("acbb"), final_watermark=None)
    assert indices(out.matches) == [(0, 2)]  # (0, 3) has b at 2 in between
    assert out.timeouts == []  # (a0) is blocked by b2


def test_next_needs_the_very_next_event():
    assert run(pattern(st("a"), st("b", after="next")), seq("acb")).matches == []
    assert indices(run(pattern(st("a"), st("b", after="next")), seq("cab")).matches) == [(1, 2)]


def test_followed_by_any_takes_every_later_event():
    spec = pattern(st("a"), st("b", after="followed_by_any"), skip="no_skip")
    out = run(spec, seq("abb"))
    assert indices(out.matches) == [(0, 1), (0, 2)]
    # (a0) still waits for another b: followed_by_any is never blocked
    assert indices(out.timeouts) == [(0,)]
    out = run(pattern(st("a"), st("b", after="followed_by_any")), seq("abb"))
    assert indices(out.matches) == [(0, 1)]  # past_last_event: q = 2 after it
    assert out.timeouts == []  # first index 0 < q


def test_inner_contiguity_next():
    spec = pattern(st("a", times=2, inner="next"), st("b"))
    assert indices(run(spec, seq("acaab")).matches) == [(2, 3, 4)]


# -- quantifiers ------------------------------------------------------------------------------


def test_times_with_relaxed_inner_contiguity():
    spec = pattern(st("a", times=3), st("b"), skip="no_skip")
    out = run(spec, seq("aacab"))
    assert indices(out.matches) == [(0, 1, 3, 4)]
    assert out.match_records == [({"start": 0, "end": 4,
                                   "stages": {"a": ["a", "a", "a"], "b": ["b"]}}, 4)]
    # (a0), (a0 a1) are blocked by later a's, (a0 a1 a3) by b4; (a1 a3) and (a3) still wait
    assert indices(out.timeouts) == [(1, 3), (3,)]


def test_times_range():
    spec = pattern(st("a", times={"min": 2, "max": 3}), st("b"), skip="no_skip")
    out = run(spec, seq("aaab"))
    # a's inner followed_by takes a's in a row; a may leave for b after 2 or 3 of them
    assert indices(out.matches) == [(0, 1, 2, 3), (0, 1, 3), (1, 2, 3)]


def test_one_or_more_and_skip_strategies():
    spec = pattern(st("a", one_or_more=True), st("b"), skip="no_skip")
    assert indices(run(spec, seq("aab")).matches) == [(0, 1, 2), (0, 2), (1, 2)]
    spec = pattern(st("a", one_or_more=True), st("b"))
    assert indices(run(spec, seq("aab")).matches) == [(0, 1, 2)]
    spec = pattern(st("a", one_or_more=True), st("b"), skip="to_next")
    assert indices(run(spec, seq("aab")).matches) == [(0, 1, 2), (1, 2)]


def test_optional_stage_may_take_none():
    spec = pattern(st("a"), st("b", optional=True), st("c"), skip="no_skip")
    assert indices(run(spec, seq("ac")).matches) == [(0, 1)]
    out = run(spec, seq("abc"))
    assert indices(out.matches) == [(0, 1, 2), (0, 2)]
    assert out.match_records[1][0]["stages"] == {"a": ["a"], "b": [], "c": ["c"]}


def test_optional_first_stage_and_optional_last_stage():
    spec = pattern(st("a", optional=True), st("b"), skip="no_skip")
    assert indices(run(spec, seq("ab")).matches) == [(0, 1), (1,)]  # both at 1: by first index
    spec = pattern(st("a"), st("b", optional=True), skip="no_skip")
    out = run(spec, seq("ab"))
    # (a0) is a match at 0, (a0 b1) another at 1; a match is never a timeout
    assert indices(out.matches) == [(0,), (0, 1)] and out.timeouts == []


GREEDY = {"a": x(lambda v: v < 5), "b": x(lambda v: v >= 3)}


def test_greedy_stage_takes_as_many_as_it_can():
    events = seq([1, 2, 4, 6])
    lazy = pattern(st("a", one_or_more=True), st("b"), skip="no_skip")
    assert indices(run(lazy, events, GREEDY).matches) == [
        (0, 1, 2), (0, 2), (1, 2), (0, 1, 2, 3), (1, 2, 3), (2, 3)]
    greedy = pattern(st("a", one_or_more=True, greedy=True), st("b"), skip="no_skip")
    # leaving a at p for b at i needs no j in (p, i] that a could take: 4 (< 5) keeps a going
    assert indices(run(greedy, events, GREEDY).matches) == [(0, 1, 2, 3), (1, 2, 3), (2, 3)]
    assert indices(run(pattern(st("a", one_or_more=True, greedy=True), st("b")), events,
                       GREEDY).matches) == [(0, 1, 2, 3)]
    assert indices(run(pattern(st("a", one_or_more=True), st("b")), events,
                       GREEDY).matches) == [(0, 1, 2)]


def test_greedy_at_its_max_lets_go():
    spec = pattern(st("a", times={"min": 1, "max": 2}, greedy=True), st("b"), skip="no_skip")
    # (0 1 2): a is full at 1, so 4 may go to b although a would take it; (1 2) and (0 2) may
    # not leave a (it has room and would take 4)
    assert indices(run(spec, seq([1, 2, 4]), GREEDY).matches) == [(0, 1, 2)]


def test_greedy_inner_next_only_looks_at_the_next_event():
    conds = {"a": x(lambda v: v < 5), "b": x(lambda v: v >= 7)}
    events = seq([1, 6, 2, 8])  # 6 is neither a nor b
    spec = pattern(st("a", one_or_more=True, greedy=True, inner="next"), st("b"), skip="no_skip")
    # a0 may leave for b at 3: a could only have taken e1 (6), and did not want it
    assert indices(run(spec, events, conds).matches) == [(0, 3), (2, 3)]
    spec = pattern(st("a", one_or_more=True, greedy=True), st("b"), skip="no_skip")
    # relaxed inner: 2 is an event a could take between, so a0 must take it first
    assert indices(run(spec, events, conds).matches) == [(0, 2, 3), (2, 3)]


# -- negative stages --------------------------------------------------------------------------


def test_not_next():
    spec = pattern(st("a"), neg("n", "not_next"), st("b"))
    assert run(spec, seq("anb")).matches == []
    assert indices(run(spec, seq("axnb")).matches) == [(0, 3)]  # only e_{p+1} is looked at


def test_not_next_looks_at_the_next_event_even_when_it_is_the_stage_event():
    spec = pattern(st("a"), {"name": "n", "not_next": "True"}, st("b"))
    conds = {"a": x(lambda v: v == 1), "n": x(lambda v: v > 5), "b": x(lambda v: v > 5)}
    assert run(spec, seq([1, 7]), conds).matches == []  # e_{p+1} is b's own event: 7 > 5


def test_not_followed_by():
    spec = pattern(st("a"), neg("n"), st("b"))
    assert run(spec, seq("anb")).matches == []
    assert indices(run(spec, seq("abnb")).matches) == [(0, 1)]
    out = run(spec, seq("an"))
    assert out.timeouts == []  # blocked by n
    assert indices(run(spec, seq("ax")).timeouts) == [(0,)]


def test_negative_stage_before_an_optional_one_applies_when_it_is_skipped():
    spec = pattern(st("a"), neg("n"), st("b", optional=True), st("c"), skip="no_skip")
    assert run(spec, seq("anc")).matches == []  # a -> c passes n
    # a -> b -> c: n lies between a and b only
    assert indices(run(spec, seq("abnc")).matches) == [(0, 1, 3)]


def test_nothing_is_forbidden_before_the_first_event():
    spec = pattern(st("a", optional=True), neg("n"), st("b"), skip="no_skip")
    assert indices(run(spec, seq("nb")).matches) == [(1,)]


def test_conditions_see_match_and_start():
    spec = pattern(st("a", one_or_more=True), st("b"), skip="no_skip")
    conds = {"a": lambda v, m, s: not m["a"] or v > m["a"][-1],  # rising
             "b": lambda v, m, s: v == sum(m["a"]) and s == 0}
    out = run(spec, seq([1, 2, 0, 3, 3]), conds)
    # from (a0 a1) b wants 1 + 2 = 3: the first 3 (index 3), although rising a could take it
    # too (not greedy); (a0 a1 a3) would want 6; runs starting elsewhere have start != 0
    assert indices(out.matches) == [(0, 1, 3)]
    assert out.match_records[0][0]["stages"] == {"a": [1, 2], "b": [3]}


# -- skip strategies --------------------------------------------------------------------------

SKIP_CONDS = {"a": x(lambda v: v < 5), "b": x(lambda v: v % 2 == 0), "c": x(lambda v: v == 9)}


@pytest.mark.parametrize("skip, expected", [
    ("no_skip", [(0, 2, 3), (1, 2, 3)]),
    ("past_last_event", [(0, 2, 3)]),
    ("to_next", [(0, 2, 3), (1, 2, 3)]),
    ({"to_first": "a"}, [(0, 2, 3), (1, 2, 3)]),
    ({"to_first": "b"}, [(0, 2, 3)]),  # q = 2 > 1
    ({"to_last": "b"}, [(0, 2, 3)]),
    ({"to_first": "c"}, [(0, 2, 3)]),
])
def test_skip_strategies(skip, expected):
    spec = pattern(st("a"), st("b"), st("c"), skip=skip)
    assert indices(run(spec, seq([1, 3, 4, 9]), SKIP_CONDS).matches) == expected


@pytest.mark.parametrize("skip, expected", [
    ({"to_first": "b"}, [(0, 1, 2, 3, 4), (1, 2, 3, 4), (2, 3, 4)]),
    ({"to_last": "b"}, [(0, 1, 2, 3, 4)]),
    ("no_skip", [(0, 1, 2, 3, 4), (0, 1, 2, 4), (0, 1, 4), (1, 2, 3, 4), (1, 2, 4), (2, 3, 4)]),
])
def test_skip_to_first_and_last_of_a_repeated_stage(skip, expected):
    spec = pattern(st("a"), st("b", one_or_more=True), st("c"), skip=skip)
    conds = {"a": x(lambda v: v < 9), "b": x(lambda v: v < 9), "c": x(lambda v: v == 9)}
    assert indices(run(spec, seq([1, 2, 3, 4, 9]), conds).matches) == expected


def test_skip_to_a_stage_that_took_none_changes_nothing():
    conds = {"a": x(lambda v: v < 5), "b": x(lambda v: v == 7), "c": x(lambda v: v == 9)}
    spec = pattern(st("a"), st("b", optional=True), st("c"), skip={"to_first": "b"})
    assert indices(run(spec, seq([1, 2, 9]), conds).matches) == [(0, 2), (1, 2)]
    spec = pattern(st("a"), st("b", optional=True), st("c"))
    assert indices(run(spec, seq([1, 2, 9]), conds).matches) == [(0, 2)]


def test_same_events_two_stage_assignments():
    spec = pattern(st("a", times={"min": 1, "max": 2}), st("b", times={"min": 1, "max": 2}),
                   skip="no_skip")
    conds = {"a": x(lambda v: True), "b": x(lambda v: True)}
    out = run(spec, seq([1, 2, 3]), conds)
    # at 2 (by first index, then indices, then stages - the doc leaves the last tie open)
    assert [[(k, i) for k, i in c] for c in out.matches] == [
        [(0, 0), (1, 1)], [(0, 0), (0, 1), (1, 2)], [(0, 0), (1, 1), (1, 2)], [(0, 1), (1, 2)]]


# -- within and timeouts ----------------------------------------------------------------------


def test_within_is_exclusive_and_the_timeout_record():
    spec = pattern(st("a"), st("b"), within=10)
    out = run(spec, [("a", 0), ("b", 10)])
    assert out.matches == []
    assert out.timeout_records == [({"start": 0, "end": 0, "expired_at": 10,
                                     "stages": {"a": ["a"], "b": []}}, 9)]
    assert indices(run(spec, [("a", 0), ("b", 9)]).matches) == [(0, 1)]


def test_timeout_of_a_stage_below_its_minimum():
    out = run(pattern(st("a", times=3), st("b")), seq("aa"))
    assert indices(out.timeouts) == [(0, 1), (1,)]  # (a0) is blocked by a1
    assert out.timeout_records[0] == ({"start": 0, "end": 1, "expired_at": 100,
                                       "stages": {"a": ["a", "a"], "b": []}}, 99)


def test_next_continuation_blocked_by_any_event():
    spec = pattern(st("a"), st("b", after="next"), within=10)
    assert indices(run(spec, [("a", 0)]).timeouts) == [(0,)]
    assert run(spec, [("a", 0), ("c", 5)]).timeouts == []
    # an event at or past the expiry does not block
    assert indices(run(spec, [("a", 0), ("c", 10)]).timeouts) == [(0,)]


def test_greedy_continuation_blocked_by_an_event_the_stage_takes():
    spec = pattern(st("a", one_or_more=True, greedy=True), st("b"), skip="no_skip")
    out = run(spec, seq([1, 2]), GREEDY)
    # (a0): a again is blocked by 2 (followed_by), leaving a by the greedy rule
    assert indices(out.timeouts) == [(0, 1), (1,)]


def test_timeouts_respect_the_skip_point_at_expiry():
    spec = pattern(st("a"), st("b", after="followed_by_any"), within=10)
    # (a0) expires at 10, before b at 13 is processed; (a1 b2) then matches
    out = run(spec, [("a", 0), ("a", 12), ("b", 13)])
    assert indices(out.matches) == [(1, 2)]
    assert indices(out.timeouts) == [(0,)]  # (a1) has first index 1 < q = 3
    out = run(spec, [("a", 0), ("a", 5), ("b", 8)])
    assert indices(out.matches) == [(0, 2)] and out.timeouts == []  # q = 3 at 10 and 15


def test_to_next_and_timeouts():
    spec = pattern(st("a"), st("b", after="followed_by_any"), skip="to_next", within=10)
    out = run(spec, [("a", 0), ("a", 1), ("b", 2)])
    assert indices(out.matches) == [(0, 2), (1, 2)]
    assert out.timeouts == []  # q = 2 when (a0) and (a1) expire


# -- time, order, lateness ---------------------------------------------------------------------


def test_late_records_dropped_and_order_by_timestamp_then_arrival():
    # arrival: b@5, a@3 (not late: watermark 2), c@1 (late: watermark 2), a@5 (same ts as b,
    # arrives later: after it)
    records = [("b", 5, NO_WATERMARK), ("a", 3, 2), ("c", 1, 2), ("a", 5, 2)]
    out = run_oracle(pattern(st("a"), st("b", after="next")), LETTERS, records)
    assert out.late == [2]
    assert [(e.value, e.ts) for e in out.events] == [("a", 3), ("b", 5), ("a", 5)]
    assert indices(out.matches) == [(0, 1)]


def test_final_watermark_limits_what_is_processed_and_expired():
    spec = pattern(st("a"), st("b"), within=10, skip="no_skip")
    events = [("a", 0), ("b", 4), ("a", 6)]
    out = run(spec, events, final_watermark=4)
    assert indices(out.matches) == [(0, 1)] and out.timeouts == []  # b at 4: processed
    out = run(spec, events, final_watermark=3)
    assert out.matches == [] and out.timeouts == []
    out = run(spec, events, final_watermark=16)
    assert indices(out.timeouts) == [(2,)]  # expired at 16
    assert run(spec, events, final_watermark=15).timeouts == []
