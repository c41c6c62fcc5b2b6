"""`pattern`: sequences of events per key, matched in event time (complex event processing).

The semantics, stated over one key's events (the oracle in tests/unit/operators/patterns
enumerates exactly this; the NFA in nfa.py computes it incrementally):

Order. A record is *late* when its timestamp is below the watermark before it; late records
go to the step's `late` sink (or are dropped) and take no part. The others are the key's
events e_0, e_1, ... in (timestamp, arrival) order; `i` below is an event's index in that order.

Candidates. A candidate is a sequence of pairs (stage, i), indices strictly increasing, whose
stages run through the positive stages in pattern order, each stage s taking between min_s
and max_s consecutive pairs (a stage with min 0 may take none). `ctx` of a pair is the
candidate's pairs before it: in expressions, `match[name]` is the list of the values its stage
took so far (an empty list for a stage with none), `start` the first pair's timestamp.
A candidate is *valid* when for every pair t = (s, i) with predecessor (s', p):
  (a) where: `where_s` holds for e_i under ctx(t); the first pair has no predecessor.
  (b) contiguity: c = inner_s if s' == s else after_s (default `followed_by`);
      next: i == p + 1;  followed_by: no j with p < j < i satisfies where_s under ctx(t);
      followed_by_any: no condition.
  (c) negative stages between s' and s (s' != s): not_next N: e_{p+1} does not satisfy N
      under ctx(t); not_followed_by N: no j with p < j < i satisfies N under ctx(t).
  (d) greedy: if s' != s, s' is greedy and took fewer than max_s' pairs: no j with p < j <= i
      satisfies where_s' under ctx(t) (inner followed_by), or, with inner `next`, e_{p+1}
      does not satisfy it. A greedy stage's extension wins over the next stage.
  (e) within: ts(e_i) < ts(first pair) + within.
A *match* is a valid candidate in which every positive stage has its minimum; it completes at
its last event.

Emission and skipping. Events are processed one by one. At event i, every match completing
at i is taken in order (first index, then the index sequence lexicographically, then the
stage sequence: for the same events an earlier stage first) and emitted
unless its first index is below the skip point q (initially 0). After each emission q rises
to max(q, point): no_skip: no change; past_last_event (default): last index + 1;
to_next: first index + 1; to_first S / to_last S: the first / last index of stage S in the
match (no change if S took none). A candidate whose first index is below q never emits.

Timeouts. A *partial match* P is a valid candidate that is not a match and can still grow. It
can grow through a continuation: the stage of its last pair again (if below its max, with
contiguity inner) or a later positive stage reachable past stages with min 0 (each with its
after contiguity and the negative stages on the way). A continuation is *blocked* by the
events after last(P) as the rules above say: next - by any event; followed_by - by an event
satisfying its stage's where; not_next N on the way - by e_{p+1} satisfying N; not_followed_by
N on the way - by an event satisfying N (after trying it as the continuation's own event);
greedy - the continuations leaving a greedy stage, by an event the stage could take. Every
condition is evaluated under ctx = P's pairs. P *expires* at ts(first) + within: it is reported
as a timeout if, considering the events with timestamp below that, some continuation is
unblocked and its first index is at least q (q as it stands after those events). A candidate
that is a match is never a timeout, even if it could still grow. Timeouts go out in the order
of their expiry, then as matches do.

A trailing negative stage. A pattern may end with a `not_followed_by` stage N (never with
`not_next`). Its candidates with every positive stage at its minimum are then *pending*: such a
candidate P becomes a match at its expiry, ts(first) + within, if no event j after last(P)
with ts(j) < ts(first) + within satisfies N under ctx = P's pairs, and is emitted then: after
every event with a smaller timestamp, before any event at or after its expiry; matches of one
expiry go out in the order above, then that expiry's timeouts; the skip rule applies as for
any match (q rises; candidates, pending ones included, starting below q are gone). A pending
candidate whose N occurred is no match; it times out as a partial match if it can still grow
(and is not reported otherwise). A pending match's record has timestamp ts(first) + within - 1.

Time. Nothing above depends on when events arrive within the watermark bound: the operator
buffers each key's events and processes them in (timestamp, arrival) order once the watermark
reaches their timestamp, expiring partial matches in time order between them (every partial
match with ts(first) + within <= t expires before an event at t), then the rest at the
watermark. Outputs: a match's record has the key, timestamp ts(last event) and value
`{"start", "end", "stages": {name: [values]}}` or what `select` makes of it; a timeout's has
timestamp ts(first) + within - 1 and value `{"start", "end", "expired_at", "stages"}`.
"""

from processor.operators.patterns.operator import PatternOperator, build_pattern_operator
from processor.operators.patterns.program import PatternProgram, compile_pattern

__all__ = ["PatternOperator", "PatternProgram", "build_pattern_operator", "compile_pattern"]
