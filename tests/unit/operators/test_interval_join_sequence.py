"""The interval join against a brute-force oracle written from its docstring (operators/joins.py),
output sequence and all: random streams with disorder and late records, cut into random
batches, with checkpoints, crashes (a dirty close, then a restore from the real store) and a
small key cache, played as a task (tests/unit/operators/task_play.py).

The oracle keeps every buffered record in one list and, at each watermark, removes the due ones
key by key in (expiry, key bytes) order — left records first, each side in arrival order — so
it checks the exact sequence the docstring promises (a replay gives the same one), offsets
included, not only the multiset of pairs that test_joins.py checks."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path
from typing import Any

import pytest

from processor.operators.joins import IntervalJoin
from processor.serde import serde_for
from processor.timeutil.watermark import END_OF_TIME, NO_WATERMARK, PartitionWatermark
from tests.unit.operators.task_play import TaskPlay, cut

KEYS = serde_for("json")
NAMES = ("left", "right")


class Play(TaskPlay):
    def __init__(self, path: Path, sc: dict[str, Any]) -> None:
        self.sc = sc
        self.late: list[Any] = []
        super().__init__(path, sc["ooo"])

    def new_operator(self) -> Any:
        sc = self.sc
        return IntervalJoin("pipelines[0].steps[1]", "j", KEYS.encode, KEYS.decode, self.clock,
                            before_ms=sc["before"], after_ms=sc["after"], kind=sc["kind"],
                            names=NAMES, cache_max_entries=sc["cache"])

    def drain(self) -> None:
        self.late += self.op.late
        self.op.late.clear()


def scenario(seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    n = rng.randint(0, 90)
    ooo = rng.choice([0, 20, 50])
    base, records = 1_000, []
    for i in range(n):
        base += rng.choice([0, 0, 5, 10, 30])
        # mostly within the out-of-orderness; sometimes well behind it: late
        lag = rng.choice([0, rng.randint(0, ooo), rng.randint(0, ooo + 80)])
        value = None if rng.random() < 0.06 else {"i": i}
        records.append((f"k{rng.randint(0, 3)}", (rng.randint(0, 1), value), base - lag, i))
    batches, events = cut(rng, records, rng.choice([0.1, 0.3, 0.7]))
    return {"records": records, "batches": batches, "events": events, "ooo": ooo,
            "before": rng.choice([0, 10, 25, 60]), "after": rng.choice([0, 10, 25, 60]),
            "kind": rng.choice(["inner", "left", "outer"]), "cache": rng.choice([1, 3, 100_000]),
            "close_at_end": rng.random() < 0.5, "reuse": rng.random() < 0.5,
            "drain": rng.random() < 0.8}


def play(sc: dict[str, Any]) -> tuple[list[Any], list[Any], list[Any]]:
    """(outputs, late records, store entries left) as the task saw them after every replay."""
    batches, records = sc["batches"], sc["records"]
    with tempfile.TemporaryDirectory() as tmp:
        h = Play(Path(tmp), sc)
        try:
            out: list[Any] = []
            saved = (0, NO_WATERMARK, 0, 0)  # batch, max_ts, len(out), len(late)
            crashed: set[int] = set()
            i = 0
            while i < len(batches):
                out += h.feed(batches[i], sc["close_at_end"])
                h.drain()
                event = sc["events"][i] if i not in crashed else 1
                if event == 4:
                    h.op.flush()  # the commit fails: these writes never reach the store
                elif event in (1, 2):
                    h.checkpoint()
                    saved = (i + 1, h.wm.max_ts, len(out), len(h.late))
                if event in (2, 3, 4):
                    crashed.add(i)
                    i, max_ts, n_out, n_late = saved
                    del out[n_out:], h.late[n_late:]
                    resume = batches[i][0][3] if i < len(batches) else len(records)
                    out += h.restore(max_ts, resume, sc["reuse"])
                    continue
                i += 1
            last = len(records) - 1
            out += h.op.on_watermark(h.wm.current, last)
            if sc["drain"]:
                h.clock.advance(END_OF_TIME)
                out += h.op.on_watermark(END_OF_TIME, last)
            h.drain()
            h.checkpoint()
            return out, h.late, list(h.store.items())
        finally:
            h.close()


def oracle(sc: dict[str, Any]) -> tuple[list[Any], list[Any], int]:
    """The docstring, by brute force: (outputs, late records, records still buffered)."""
    before, after, kind = sc["before"], sc["after"], sc["kind"]
    keep = (after, before)
    alone = (kind != "inner", kind == "outer")
    wm = PartitionWatermark(sc["ooo"])
    marks = wm.observe([r[2] for r in sc["records"]])
    buffered: list[dict[str, Any]] = []  # in arrival order
    out: list[Any] = []
    late: list[Any] = []

    def fire(watermark: int, offset: int) -> None:
        while True:
            due = [(b["expiry"], KEYS.encode(b["key"])) for b in buffered if b["expiry"] <= watermark]
            if not due:
                return
            expiry, kb = min(due)
            gone = [b for b in buffered if KEYS.encode(b["key"]) == kb and b["expiry"] <= expiry]
            for b in sorted(gone, key=lambda b: b["side"]):  # stable: arrival order per side
                buffered.remove(b)
                if alone[b["side"]] and not b["matched"]:
                    pair = {"left": b["value"], "right": None} if b["side"] == 0 else \
                        {"left": None, "right": b["value"]}
                    out.append((b["key"], pair, b["ts"], offset))

    for record, w in zip(sc["records"], marks, strict=True):
        key, (side, value), ts, offset = record
        fire(w, offset - 1)
        if value is None:
            continue
        if ts < w:
            late.append((record, 0, 0, w))
            continue
        lo, hi = (ts - before, ts + after) if side == 0 else (ts - after, ts + before)
        partners = [b for b in buffered if b["key"] == key and b["side"] != side and lo <= b["ts"] <= hi]
        for b in partners:
            b["matched"] = True
            pair = {"left": value, "right": b["value"]} if side == 0 else \
                {"left": b["value"], "right": value}
            out.append((key, pair, max(ts, b["ts"]), offset))
        buffered.append({"key": key, "side": side, "value": value, "ts": ts, "matched": bool(partners),
                         "expiry": ts + keep[side] + 1})
    last = len(sc["records"]) - 1
    fire(wm.current, last)
    if sc["drain"]:
        fire(END_OF_TIME, last)
    return out, late, len(buffered)


@pytest.mark.parametrize("seed", range(300))
def test_the_join_emits_exactly_the_oracles_sequence(seed: int) -> None:
    sc = scenario(seed)
    out, late, left_in_store = play(sc)
    want, want_late, buffered = oracle(sc)
    assert out == want
    assert late == want_late
    # the store holds exactly the records still buffered, nothing else
    assert len(left_in_store) == buffered
    if sc["drain"]:
        assert left_in_store == []


def test_the_oracle_scenarios_cover_what_they_are_for() -> None:
    """Late records, pairs, lone records, crashes and cold caches all occur among the seeds."""
    seen = {"late": 0, "pairs": 0, "alone": 0, "crash": 0, "cold": 0}
    for seed in range(300):
        sc = scenario(seed)
        out, late, _ = oracle(sc)
        seen["late"] += bool(late)
        seen["pairs"] += any(None not in r[1].values() for r in out)
        seen["alone"] += any(None in r[1].values() for r in out)
        seen["crash"] += any(e in (2, 3, 4) for e in sc["events"])
        seen["cold"] += sc["cache"] < 100_000
    assert min(seen.values()) >= 30, seen
