"""A brute-force model of the `pattern` step, written from its documented semantics only.

It reads the module docstring of processor/operators/patterns literally: drop the late records,
order the rest by (timestamp, arrival), enumerate every candidate (increasing index sequences
with a stage assignment) checking rules (a)-(e) pair by pair, then walk the events in order to
emit the matches under the skip rule, and decide each partial match's timeout from the events
before its expiry. With a trailing `not_followed_by` every match is pending: it goes out at its
expiry if that stage's condition stayed false, so the walk is over moments - each event, and
each expiry before the events at its time - with the skip point rising at both. No NFA, no
runs, no incremental state: exponential, meant for ~10 events a key. Conditions are Python
callables `cond(value, match, start)`.

Enumeration extends valid candidates one pair at a time: a pair's validity depends only on the
pairs before it and the events up to it, so the prefixes of a valid candidate are valid and
growing from every valid prefix reaches every valid candidate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from processor.spec.patterns import PatternSpec, SkipToStage, StageSpec

Cond = Callable[[Any, dict[str, list[Any]], int], bool]
Pairs = tuple[tuple[int, int], ...]  # (positive stage number, event index), indices increasing


@dataclass(frozen=True)
class Event:
    value: Any
    ts: int
    arrival: int  # position in the input (records in arrival order)


@dataclass
class Outcome:
    events: list[Event]  # the non-late events in (timestamp, arrival) order
    late: list[int] = field(default_factory=list)  # arrival positions of the late records
    matches: list[Pairs] = field(default_factory=list)  # emitted, in emission order
    timeouts: list[Pairs] = field(default_factory=list)  # by expiry, then first index, pairs
    match_records: list[tuple[dict[str, Any], int]] = field(default_factory=list)  # (value, ts)
    timeout_records: list[tuple[dict[str, Any], int]] = field(default_factory=list)


class PatternOracle:
    def __init__(self, spec: PatternSpec, conds: dict[str, Cond]) -> None:
        self.spec = spec
        self.stages: list[StageSpec] = spec.stages
        self.positive = [s for s in self.stages if not s.negative]
        self.names = [s.name for s in self.positive]
        self.at = [self.stages.index(s) for s in self.positive]  # place in the pattern
        self.conds = conds
        self.within = spec.within
        last = self.stages[-1]  # a trailing not_followed_by makes every match a pending one
        self.trailing: StageSpec | None = last if last.negative else None

    # -- rules (a)-(e) ------------------------------------------------------------------------

    def ctx(self, ev: list[Event], pairs: Pairs) -> tuple[dict[str, list[Any]], int]:
        match: dict[str, list[Any]] = {n: [] for n in self.names}
        for k, i in pairs:
            match[self.names[k]].append(ev[i].value)
        return match, ev[pairs[0][1]].ts

    def holds(self, name: str, ev: Event, match: dict[str, list[Any]], start: int) -> bool:
        return bool(self.conds[name](ev.value, match, start))

    def negatives_between(self, k1: int, k2: int) -> list[StageSpec]:
        """The negative stages between positive stages k1 and k2 (k1 < k2) in the pattern."""
        return [s for s in self.stages[self.at[k1] + 1:self.at[k2]] if s.negative]

    def pair_ok(self, ev: list[Event], prefix: Pairs, s: int, i: int) -> bool:
        """Whether the pair (s, i) satisfies (a)-(e) after `prefix`."""
        stage = self.positive[s]
        if not prefix:
            match, start = {n: [] for n in self.names}, ev[i].ts
            return self.holds(stage.name, ev[i], match, start)  # (a); (e) holds trivially
        match, start = self.ctx(ev, prefix)
        if not self.holds(stage.name, ev[i], match, start):  # (a)
            return False
        s1, p = prefix[-1]
        contiguity = (stage.inner if s1 == s else stage.after) or "followed_by"  # (b)
        if contiguity == "next" and i != p + 1:
            return False
        if contiguity == "followed_by" and any(
                self.holds(stage.name, ev[j], match, start) for j in range(p + 1, i)):
            return False
        if s1 != s:
            for neg in self.negatives_between(s1, s):  # (c)
                if neg.not_next is not None and self.holds(neg.name, ev[p + 1], match, start):
                    return False
                if neg.not_followed_by is not None and any(
                        self.holds(neg.name, ev[j], match, start) for j in range(p + 1, i)):
                    return False
            left = self.positive[s1]  # (d)
            taken = sum(1 for k, _ in prefix if k == s1)
            if left.greedy and (left.max is None or taken < left.max):
                if left.inner == "next":
                    if self.holds(left.name, ev[p + 1], match, start):
                        return False
                elif any(self.holds(left.name, ev[j], match, start) for j in range(p + 1, i + 1)):
                    return False
        return ev[i].ts < ev[prefix[0][1]].ts + self.within  # (e)

    # -- candidates ---------------------------------------------------------------------------

    def count(self, pairs: Pairs, k: int) -> int:
        return sum(1 for s, _ in pairs if s == k)

    def later_stages(self, k: int) -> list[int]:
        """Positive stages after k reachable past stages with min 0."""
        out = []
        for u in range(k + 1, len(self.positive)):
            out.append(u)
            if self.positive[u].min > 0:
                break
        return out

    def first_stages(self) -> list[int]:
        out = []
        for u, stage in enumerate(self.positive):
            out.append(u)
            if stage.min > 0:
                break
        return out

    def next_stages(self, pairs: Pairs) -> list[int]:
        """The stages the pair after `pairs` may have (each stage between min and max)."""
        k = pairs[-1][0]
        n = self.count(pairs, k)
        stage = self.positive[k]
        out = [k] if stage.max is None or n < stage.max else []
        if n >= stage.min:
            out += self.later_stages(k)
        return out

    def is_match(self, pairs: Pairs) -> bool:
        k = pairs[-1][0]
        return (self.count(pairs, k) >= self.positive[k].min
                and all(s.min == 0 for s in self.positive[k + 1:]))

    def candidates(self, ev: list[Event]) -> Iterator[Pairs]:
        def grow(pairs: Pairs) -> Iterator[Pairs]:
            yield pairs
            for i in range(pairs[-1][1] + 1, len(ev)):
                for s in self.next_stages(pairs):
                    if self.pair_ok(ev, pairs, s, i):
                        yield from grow((*pairs, (s, i)))

        for i in range(len(ev)):
            for s in self.first_stages():
                if self.pair_ok(ev, (), s, i):
                    yield from grow(((s, i),))

    # -- skipping -----------------------------------------------------------------------------

    def skip_point(self, pairs: Pairs, q: int) -> int:
        skip = self.spec.skip
        if skip == "no_skip":
            return q
        if skip == "past_last_event":
            return max(q, pairs[-1][1] + 1)
        if skip == "to_next":
            return max(q, pairs[0][1] + 1)
        assert isinstance(skip, SkipToStage)
        mine = [i for k, i in pairs if self.names[k] == skip.stage]
        if not mine:
            return q
        return max(q, mine[0] if skip.to_first is not None else mine[-1])

    # -- timeouts -----------------------------------------------------------------------------

    def unblocked(self, ev: list[Event], pairs: Pairs, horizon: int) -> bool:
        """Whether some continuation of partial match `pairs` survives the events after its last
        one up to index `horizon` (exclusive): the events with timestamp below its expiry."""
        match, start = self.ctx(ev, pairs)
        k, p = pairs[-1]
        after = list(range(p + 1, horizon))
        stage = self.positive[k]
        n = self.count(pairs, k)

        def blocked_by_contiguity(target: StageSpec, contiguity: str) -> bool:
            if contiguity == "next":
                return bool(after)
            if contiguity == "followed_by":
                return any(self.holds(target.name, ev[j], match, start) for j in after)
            return False

        again = stage.max is None or n < stage.max
        if again and not blocked_by_contiguity(stage, stage.inner or "followed_by"):
            return True
        if n < stage.min:
            return False
        for u in self.later_stages(k):
            target = self.positive[u]
            if blocked_by_contiguity(target, target.after or "followed_by"):
                continue
            if any(neg.not_next is not None and after
                   and self.holds(neg.name, ev[after[0]], match, start)
                   for neg in self.negatives_between(k, u)):
                continue
            if any(neg.not_followed_by is not None
                   and any(self.holds(neg.name, ev[j], match, start) for j in after)
                   for neg in self.negatives_between(k, u)):
                continue
            if stage.greedy and (stage.max is None or n < stage.max):
                takers = after[:1] if stage.inner == "next" else after
                if any(self.holds(stage.name, ev[j], match, start) for j in takers):
                    continue
            return True
        return False

    # -- the run ------------------------------------------------------------------------------

    def run(self, records: list[tuple[Any, int, int]], final_watermark: int | None = None,
            ready_inclusive: bool = True) -> Outcome:
        """`records`: one key's (value, timestamp, watermark before it) in arrival order.

        final_watermark: how far the watermark got (None: to the end of time). Events with a
        timestamp at or below it (below it unless ready_inclusive) have been processed, and
        partial matches (pending ones too) whose expiry is at or below it have expired."""
        late = [n for n, (_, t, w) in enumerate(records) if t < w]
        kept = [Event(v, t, n) for n, (v, t, w) in enumerate(records) if t >= w]
        ev = sorted(kept, key=lambda e: (e.ts, e.arrival))
        out = Outcome(ev, late)
        if final_watermark is None:
            processed = len(ev)
        else:
            processed = sum(1 for e in ev if e.ts < final_watermark
                            or (ready_inclusive and e.ts == final_watermark))
        everything = list(self.candidates(ev))

        def order(c: Pairs) -> tuple[Any, ...]:
            return c[0][1], [i for _, i in c], [k for k, _ in c]

        def expiry(c: Pairs) -> int:
            return ev[c[0][1]].ts + self.within

        def horizon(t: int) -> int:  # the number of events with timestamp below t
            return sum(1 for e in ev if e.ts < t)

        at_event: dict[int, list[Pairs]] = {i: [] for i in range(processed)}
        expiring: dict[int, list[Pairs]] = {}  # candidates by expiry, up to the watermark
        for c in everything:
            if final_watermark is None or expiry(c) <= final_watermark:
                expiring.setdefault(expiry(c), []).append(c)
            if self.trailing is None and self.is_match(c) and c[-1][1] < processed:
                at_event[c[-1][1]].append(c)
        # the moments in time order: an expiry at t before the events at t
        moments = sorted([(ev[i].ts, 1, i) for i in range(processed)]
                         + [(t, 0, t) for t in expiring])
        q = 0
        for _, is_event, at in moments:
            if is_event:
                found = at_event[at]
            else:
                h = horizon(at)  # the events before the expiry
                found = [c for c in expiring[at] if self.trailing is not None
                         and self.is_match(c) and self.clear_of_trailing(ev, c, h)]
            for c in sorted(found, key=order):
                if c[0][1] >= q:
                    out.matches.append(c)
                    q = self.skip_point(c, q)
            if not is_event:  # q stands after the events before `at` and at's matches
                out.timeouts += sorted((c for c in expiring[at] if c[0][1] >= q and c not in found
                                        and self.times_out(ev, c, h)), key=order)
        out.match_records = [self.match_record(ev, c) for c in out.matches]
        out.timeout_records = [self.timeout_record(ev, c) for c in out.timeouts]
        return out

    def times_out(self, ev: list[Event], pairs: Pairs, horizon: int) -> bool:
        """A partial match, or a pending candidate whose trailing N occurred, that can grow."""
        if self.is_match(pairs) and self.trailing is None:
            return False  # a match is never a timeout
        return self.unblocked(ev, pairs, horizon)

    def clear_of_trailing(self, ev: list[Event], pairs: Pairs, horizon: int) -> bool:
        """Whether no event after the pending candidate's last, before its expiry (index
        `horizon`, exclusive), satisfies the trailing negative stage under ctx = its pairs."""
        assert self.trailing is not None
        match, start = self.ctx(ev, pairs)
        return not any(self.holds(self.trailing.name, ev[j], match, start)
                       for j in range(pairs[-1][1] + 1, horizon))

    def stages_of(self, ev: list[Event], pairs: Pairs) -> dict[str, list[Any]]:
        return self.ctx(ev, pairs)[0]

    def match_record(self, ev: list[Event], pairs: Pairs) -> tuple[dict[str, Any], int]:
        start, end = ev[pairs[0][1]].ts, ev[pairs[-1][1]].ts
        at = end if self.trailing is None else start + self.within - 1  # a pending match: expiry - 1
        return {"start": start, "end": end, "stages": self.stages_of(ev, pairs)}, at

    def timeout_record(self, ev: list[Event], pairs: Pairs) -> tuple[dict[str, Any], int]:
        start, end = ev[pairs[0][1]].ts, ev[pairs[-1][1]].ts
        expiry = start + self.within
        return ({"start": start, "end": end, "expired_at": expiry,
                 "stages": self.stages_of(ev, pairs)}, expiry - 1)


def run_oracle(spec: PatternSpec, conds: dict[str, Cond], records: list[tuple[Any, int, int]],
               final_watermark: int | None = None, ready_inclusive: bool = True) -> Outcome:
    return PatternOracle(spec, conds).run(records, final_watermark, ready_inclusive)
