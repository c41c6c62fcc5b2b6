"""Hypothesis strategies for the pattern step's oracle comparison: random valid patterns whose
conditions come as an expression string (for the operator) and the same predicate as a Python
callable (for the oracle), and random multi-key streams with disorder, late records, batching,
checkpoints and crashes."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import assume
from hypothesis import strategies as st
from pydantic import ValidationError

from processor.spec.patterns import PatternSpec, StageSpec
from tests.unit.operators.patterns.pattern_oracle import Cond
from tests.unit.operators.task_play import cut

POSITIVE = "abcd"

# -- conditions: the same predicate as an expression and as a callable --------------------------


@st.composite
def condition(draw: Any, earlier: list[str], negative: bool = False) -> tuple[str, Cond]:
    """A condition over value['x'] (0..6), possibly reading `match` of a stage in `earlier`
    (stages before this one, or this one itself) or `start`."""
    kinds = ["gt", "gt", "lt", "lt", "eq", "ne", "mod", "mod", "true", "rise", "sum", "start"]
    if negative:
        kinds = ["gt", "eq", "mod", "rise", "sum"]
    kind = draw(st.sampled_from(kinds))
    c = draw(st.integers(0, 6))
    if kind == "gt":
        return f"value['x'] > {c}", lambda v, m, s: v["x"] > c
    if kind == "lt":
        return f"value['x'] < {c}", lambda v, m, s: v["x"] < c
    if kind == "eq":
        return f"value['x'] == {c}", lambda v, m, s: v["x"] == c
    if kind == "ne":
        return f"value['x'] != {c}", lambda v, m, s: v["x"] != c
    if kind == "mod":
        r = c % 2
        return f"value['x'] % 2 == {r}", lambda v, m, s: v["x"] % 2 == r
    if kind == "true":
        return "True", lambda v, m, s: True
    if kind == "start":
        return "(start + value['x']) % 3 != 0", lambda v, m, s: (s + v["x"]) % 3 != 0
    r_ = draw(st.sampled_from(earlier))
    if kind == "rise":
        return (f"len(match['{r_}']) == 0 or value['x'] > match['{r_}'][-1]['x']",
                lambda v, m, s: len(m[r_]) == 0 or v["x"] > m[r_][-1]["x"])
    limit = c + 6
    return (f"sum(e['x'] for e in match['{r_}']) + value['x'] < {limit}",
            lambda v, m, s: sum(e["x"] for e in m[r_]) + v["x"] < limit)


QUANTIFIERS = ["one", "one", "times", "range", "plus", "plus", "opt", "opt_plus", "opt_range"]
CONTIGUITIES = [None, "next", "followed_by", "followed_by_any"]


@st.composite
def patterns(draw: Any) -> tuple[PatternSpec, dict[str, Cond]]:
    n = draw(st.integers(2, 4))
    stages: list[dict[str, Any]] = []
    conds: dict[str, Cond] = {}
    names: list[str] = []
    for k in range(n):
        name = POSITIVE[k]
        if k > 0 and draw(st.integers(0, 3)) == 0:
            kind = draw(st.sampled_from(["not_next", "not_followed_by"]))
            src, fn = draw(condition(names, negative=True))
            stages.append({"name": f"n{k}", kind: src})
            conds[f"n{k}"] = fn
        src, fn = draw(condition([*names, name]))
        names.append(name)
        conds[name] = fn
        stage: dict[str, Any] = {"name": name, "where": src}
        q = draw(st.sampled_from(QUANTIFIERS))
        if q == "times":
            stage["times"] = draw(st.integers(2, 3))
        elif q in ("range", "opt_range"):
            lo = draw(st.integers(0, 2))
            stage["times"] = {"min": lo, "max": draw(st.integers(max(lo, 1), 3))}
        elif q in ("plus", "opt_plus"):
            stage["one_or_more"] = True
        if q.startswith("opt"):
            stage["optional"] = True
        spec = StageSpec(**stage)
        if spec.max != spec.min and draw(st.integers(0, 2)) == 0:
            stage["greedy"] = True
        if spec.max != 1:
            inner = draw(st.sampled_from(CONTIGUITIES))
            if inner is not None and not (inner == "followed_by_any" and stage.get("greedy")):
                stage["inner"] = inner
        if k > 0:
            after = draw(st.sampled_from(CONTIGUITIES))
            if after is not None:
                stage["after"] = after
        stages.append(stage)
    specs = [StageSpec(**s) for s in stages]
    positive = [s for s in specs if not s.negative]
    if all(s.min == 0 for s in positive):
        last = stages[-1]
        last.pop("optional", None)
        if isinstance(last.get("times"), dict) and last["times"]["min"] == 0:
            last["times"]["min"] = 1
        plain = StageSpec(**{k: v for k, v in last.items() if k not in ("greedy", "inner")})
        if plain.max == plain.min:
            last.pop("greedy", None)
        if plain.max == 1:
            last.pop("inner", None)
        specs = [StageSpec(**s) for s in stages]
    for i, s in enumerate(stages):  # greedy needs a required stage after it
        if s.get("greedy") and all(t.negative or t.min == 0 for t in specs[i + 1:]):
            del s["greedy"]
    if draw(st.integers(0, 3)) == 0:  # a trailing not_followed_by: every match is pending
        src, fn = draw(condition(names, negative=True))
        stages.append({"name": "z", "not_followed_by": src})
        conds["z"] = fn
    skip: Any = draw(st.sampled_from(["no_skip", "past_last_event", "to_next", "first", "last"]))
    if skip in ("first", "last"):
        skip = {f"to_{skip}": draw(st.sampled_from(names))}
    try:
        spec = PatternSpec(stages=stages, within=draw(st.integers(2, 40)), skip=skip,
                           timeouts="drop", late="drop")
    except ValidationError:
        assume(False)
        raise
    return spec, conds


# -- the stream ---------------------------------------------------------------------------------


@st.composite
def streams(draw: Any) -> dict[str, Any]:
    """Records from a seeded RNG: event time advances by up to `step` per record, some lag by
    up to `disorder` (a few three times that: late ones), now and then time jumps ahead."""
    keys = draw(st.sampled_from([["k"], ["k", "l"], ["k", "l", "é"]]))
    per_key = draw(st.integers(1, 10))
    step, disorder = draw(st.integers(0, 4)), draw(st.integers(0, 8))
    rng = random.Random(draw(st.integers(0, 2**32)))
    now = draw(st.integers(-20, 20))
    counts = dict.fromkeys(keys, 0)
    records = []
    for i in range(per_key * len(keys)):
        open_keys = [k for k in keys if counts[k] < per_key]
        key = rng.choice(open_keys)
        counts[key] += 1
        now += rng.randint(0, step) + (rng.randint(5, 30) if rng.random() < 0.08 else 0)
        lag = rng.randint(0, disorder) * (3 if rng.random() < 0.1 else 1) if rng.random() < 0.5 else 0
        value = None if rng.random() < 0.04 else {"x": rng.randint(0, 6)}  # None: a tombstone
        records.append((key, value, now - lag, i))
    batches, events = cut(rng, records, draw(st.sampled_from([0.1, 0.3, 0.7])))
    return {"records": records, "batches": batches, "events": events,
            "ooo": draw(st.integers(0, 10)), "close_at_end": draw(st.booleans()),
            "cache": draw(st.sampled_from([0, 2, 100_000])), "reuse": draw(st.booleans()),
            "drain": draw(st.booleans())}
