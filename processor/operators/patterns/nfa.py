"""Matching one key's events: the incremental form of the semantics in __init__.py.

A key's state is one JSON list, `[seq, pos, q, buffer, runs]`:

    seq     arrival number of the next buffered event (ties of equal timestamps)
    pos     index of the next event to process (i in the semantics)
    q       the skip point: runs starting below it are gone
    buffer  [ts, seq, value, offset] not processed yet, sorted by (ts, seq)
    runs    partial matches [stage, count, last index, first ts, first index, blocked, pairs]
            with `blocked` a bit per continuation (program.py) and pairs
            [stage, i, ts, value, input offset]

Indices only compare within the state, so an emptied state is dropped and a later event of
the key starts again from zero. An event is processed as a unit: every condition, the
matches it completes and their `select` are evaluated before the state changes, so an event
whose expression raises is reported (`failed`) and leaves the state as if it never came.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from processor.operators.patterns.program import (
    END,
    NEXT,
    PAST_LAST,
    RELAXED,
    TO_FIRST,
    TO_LAST,
    TO_NEXT,
    PatternProgram,
)

SEQ, POS, Q, BUF, RUNS = range(5)
STAGE, COUNT, LAST, FIRST_TS, FIRST, BLOCKED, PAIRS = range(7)
MATCH, TIMEOUT = 0, 1
Output = tuple[int, Any, int]  # (MATCH | TIMEOUT, value, timestamp)
Failure = tuple[list[Any], Exception]  # (the buffer entry, what it raised)
_EMPTY: dict[str, list[Any]] = {}


def _order(run: list[Any]) -> tuple[Any, ...]:
    """Runs go out by first ts (= expiry order), first index, index sequence, then stages
    (for the same events, an earlier stage first)."""
    pairs = run[PAIRS]
    return run[FIRST_TS], run[FIRST], [p[1] for p in pairs], [p[0] for p in pairs]


def new_state() -> list[Any]:
    return [0, 0, 0, [], []]


def wake_time(state: list[Any], within: int) -> int | None:
    """When the key next needs the watermark: its first buffered event or first expiry."""
    buf, runs = state[BUF], state[RUNS]
    t = buf[0][0] if buf else None
    for run in runs:
        e = run[FIRST_TS] + within
        if t is None or e < t:
            t = e
    return t


def offer(state: list[Any], ts: int, value: Any, offset: int) -> None:
    """Buffer an event (not late: the caller checked) in (ts, arrival) order."""
    buf = state[BUF]
    entry = [ts, state[SEQ], value, offset]
    state[SEQ] += 1
    if not buf or buf[-1][0] <= ts:
        buf.append(entry)
        return
    lo, hi = 0, len(buf)
    while lo < hi:
        mid = (lo + hi) // 2
        if buf[mid][0] <= ts:
            lo = mid + 1
        else:
            hi = mid
    buf.insert(lo, entry)


class Matcher:
    """Runs a compiled pattern over key states; stateless itself (one per operator)."""

    def __init__(self, prog: PatternProgram) -> None:
        self.prog = prog
        self.names = prog.names
        self.within = prog.within

    def advance(self, key: Any, state: list[Any], bound: int, out: list[Output],
                failed: list[Failure]) -> bool:
        """Process the buffered events with ts <= bound and expire what `bound` passed.
        True if the state changed."""
        buf = state[BUF]
        changed = False
        if buf and buf[0][0] <= bound:
            n = 0
            while n < len(buf) and buf[n][0] <= bound:
                n += 1
            due = buf[:n]
            del buf[:n]
            changed = True
            for entry in due:
                t = entry[0]
                if state[RUNS]:
                    self._expire(key, state, t, out, failed)  # what cannot take an event at t
                try:
                    self._event(key, state, t, entry[2], entry[3], out)
                except Exception as exc:
                    failed.append((entry, exc))
        if state[RUNS] and self._expire(key, state, bound, out, failed):
            changed = True
        return changed

    # -- expiry --------------------------------------------------------------------------------

    def _expire(self, key: Any, state: list[Any], through: int, out: list[Output],
                failed: list[Failure]) -> bool:
        """End every run with first ts + within <= `through` (it cannot take an event at
        `through` or later), one expiry time after the other: a pending run whose trailing
        negative stage saw no event is a match (skip rule as at an event), then the runs that
        could still grow and are no match time out."""
        within = self.within
        runs = state[RUNS]
        gone = [r for r in runs if r[FIRST_TS] + within <= through]
        if not gone:
            return False
        gone.sort(key=_order)
        prog = self.prog
        q = state[Q]
        n, i = len(gone), 0
        while i < n:
            first_ts = gone[i][FIRST_TS]
            expired = first_ts + within
            timeouts = []
            while i < n and gone[i][FIRST_TS] == first_ts:
                r = gone[i]
                i += 1
                if r[FIRST] < q:
                    continue  # skipped past by a match of this expiry
                c = prog.count_class(r[STAGE], r[COUNT])
                if self._pending(r, c):
                    try:
                        value = self._value(key, r)
                    except Exception as exc:  # its last event takes the blame, with coordinates
                        last = r[PAIRS][-1]
                        failed.append(([last[2], -1, last[3], last[4]], exc))
                        continue
                    out.append((MATCH, value, expired - 1))
                    q = self._skip(q, r)
                elif not prog.complete[r[STAGE]][c]:
                    timeouts.append(r)
            for r in timeouts:
                if r[FIRST] >= q:
                    pairs = r[PAIRS]
                    out.append((TIMEOUT, {"start": first_ts, "end": pairs[-1][2],
                                          "expired_at": expired, "stages": self._stages(pairs)},
                                expired - 1))
        state[RUNS] = [r for r in runs if r[FIRST_TS] + within > through and r[FIRST] >= q]
        state[Q] = q
        return True

    def _pending(self, run: list[Any], c: int) -> bool:
        """Whether the run is a pending match whose trailing negative stage saw no event."""
        mask = run[BLOCKED]
        return any(cont.target == END and not mask & (1 << ci)
                   for ci, cont in enumerate(self.prog.conts[run[STAGE]][c]))

    # -- one event ----------------------------------------------------------------------------

    def _stages(self, pairs: list[list[Any]]) -> dict[str, list[Any]]:
        names = self.names
        m: dict[str, list[Any]] = {n: [] for n in names}
        for p in pairs:
            m[names[p[0]]].append(p[3])
        return m

    def _event(self, key: Any, state: list[Any], t: int, v: Any, o: int,
               out: list[Output]) -> None:
        prog = self.prog
        conds, uses, conts_of, cls = prog.conds, prog.uses_match, prog.conts, prog.count_class
        i, q = state[POS], state[Q]
        masks: list[tuple[list[Any], int]] = []
        created: list[list[Any]] = []
        for run in state[RUNS]:
            k, n, p, fts, mask, pairs = (run[STAGE], run[COUNT], run[LAST], run[FIRST_TS],
                                         run[BLOCKED], run[PAIRS])
            conts = conts_of[k][cls(k, n)]
            adjacent = i == p + 1
            match: dict[str, list[Any]] | None = None
            new_mask = mask
            for ci, c in enumerate(conts):
                bit = 1 << ci
                if mask & bit:
                    continue
                if match is None and c.reads_match:
                    match = self._stages(pairs)
                m = match if match is not None else _EMPTY
                contiguity = c.contiguity
                blocked = contiguity == NEXT  # a strict continuation has this one chance
                ok = adjacent or contiguity != NEXT
                if ok and adjacent:
                    for neg in c.not_next:
                        if neg(key, v, t, m, fts):
                            ok, blocked = False, True
                            break
                if (ok and c.guard is not None and (adjacent or not c.guard_next)
                        and c.guard(key, v, t, m, fts)):
                    ok, blocked = False, True
                target = c.target
                if ok and target != END and conds[target](key, v, t, m, fts):
                    created.append([target, n + 1 if target == k else 1, i, fts, run[FIRST], 0,
                                    [*pairs, [target, i, t, v, o]]])
                    if contiguity == RELAXED:
                        blocked = True
                if not blocked:
                    for neg in c.not_followed_by:
                        if neg(key, v, t, m, fts):
                            blocked = True
                            break
                if blocked:
                    new_mask |= bit
            if new_mask != (1 << len(conts)) - 1:
                masks.append((run, new_mask))
        for s in prog.starts:
            if conds[s](key, v, t, self._stages([]) if uses[s] else _EMPTY, t):
                created.append([s, 1, i, t, i, 0, [[s, i, t, v, o]]])
        emitted: list[Output] = []
        live = []
        if created:
            done = []
            for run in created:
                c = cls(run[STAGE], run[COUNT])
                if prog.complete[run[STAGE]][c]:
                    done.append(run)
                if conts_of[run[STAGE]][c]:
                    live.append(run)
            if done:
                q = self._emit(key, done, q, emitted)
        runs = [r for r, _ in masks if r[FIRST] >= q] + [r for r in live if r[FIRST] >= q]
        for r, mask in masks:  # commit: nothing below raises
            r[BLOCKED] = mask
        state[RUNS] = runs
        state[POS] = i + 1
        state[Q] = q
        out.extend(emitted)

    def _emit(self, key: Any, done: list[list[Any]], q: int, out: list[Output]) -> int:
        """Emit the matches completing at this event in order, skipping as the strategy says;
        returns the new skip point."""
        if len(done) > 1:
            done.sort(key=_order)
        for run in done:
            if run[FIRST] < q:
                continue
            out.append((MATCH, self._value(key, run), run[PAIRS][-1][2]))
            q = self._skip(q, run)
        return q

    def _skip(self, q: int, run: list[Any]) -> int:
        """The skip point after emitting `run` as a match."""
        skip, pairs = self.prog.skip, run[PAIRS]
        if skip == PAST_LAST:
            return max(q, pairs[-1][1] + 1)
        if skip == TO_NEXT:
            return max(q, run[FIRST] + 1)
        if skip in (TO_FIRST, TO_LAST):
            at = [p[1] for p in pairs if p[0] == self.prog.skip_stage]
            if at:
                return max(q, at[0] if skip == TO_FIRST else at[-1])
        return q

    def _value(self, key: Any, run: list[Any]) -> Any:
        pairs = run[PAIRS]
        start, end = run[FIRST_TS], pairs[-1][2]
        stages = self._stages(pairs)
        prog = self.prog
        if prog.select is not None:
            return prog.select(key, stages, start, end)
        fields: dict[str, Callable[..., Any]] | None = prog.select_fields
        if fields is not None:
            last = pairs[-1][3]
            return {name: fn(key, last, end, stages, start, end) for name, fn in fields.items()}
        return {"start": start, "end": end, "stages": stages}
