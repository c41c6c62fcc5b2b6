"""Keyed process functions with state and timers, over a real RocksStore, driven like a task does:
watermarks per batch from a PartitionWatermark, process, on_watermark, flush -> apply -> committed."""

from __future__ import annotations

import importlib.util
import tempfile
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processor.expressions import load_callable
from processor.operators.base import StepFailed
from processor.operators.process import ProcessFunction
from processor.serde import serde_for
from processor.spec import load_spec
from processor.state import RocksStore
from processor.state.keys import unpack_ts
from processor.timeutil.watermark import Clock, PartitionWatermark
from tests.paths import REPO

TOPOLOGIES = REPO / "topologies"
KEYS = serde_for("string")
STEP = "pipelines[0].steps[0]"


def _load_login_alerts() -> Any:
    spec = importlib.util.spec_from_file_location("login_alerts", TOPOLOGIES / "login_alerts.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


login = _load_login_alerts()


def rec(key: Any, value: Any, ts: int = 0, offset: int = 0) -> tuple[Any, Any, int, int]:
    return (key, value, ts, offset)


class Driver:
    """A task in miniature: one source partition's watermark, the operator, checkpoints."""

    def __init__(self, store: RocksStore, fn: Callable[..., Any] | None,
                 on_timer: Callable[..., Any] | None = None, *, delay_ms: int = 0,
                 now: list[int] | None = None, skip_below: int = -1,
                 watermark_state: dict[str, Any] | None = None, cache_max_entries: int = 100_000,
                 make: Callable[[Clock], Any] | None = None) -> None:
        """`make(clock)` builds another ProcessFunction (a join) instead of one around `fn`."""
        self.store = store
        self.clock = Clock()
        self.wm = PartitionWatermark(delay_ms)
        if watermark_state is not None:
            self.wm.restore(watermark_state)
            self.clock.advance(self.wm.current)
        self.now = now if now is not None else [0]
        self.op = make(self.clock) if make is not None else ProcessFunction(
            STEP, "st", fn, on_timer, KEYS.encode, KEYS.decode, self.clock,
            cache_max_entries=cache_max_entries, now_ms=lambda: self.now[0])
        self.op.bind(store, skip_below)
        self.pending: dict[bytes, bytes | None] = {}
        self.last_offset = -1

    def feed(self, batch: list[tuple[Any, Any, int, int]]) -> list[Any]:
        before = self.wm.observe([r[2] for r in batch])
        self.clock.set_batch([r[3] for r in batch], before, self.wm.current)
        out = self.op.process(batch)
        self.last_offset = batch[-1][3]
        return out + self.op.on_watermark(self.wm.current, self.last_offset)

    def advance(self, watermark: int) -> list[Any]:
        """An idle advance of the watermark, without records."""
        self.clock.advance(watermark)
        return self.op.on_watermark(self.clock.current, self.last_offset)

    def tick(self, now: int) -> list[Any]:
        self.now[0] = now
        return self.op.on_processing_time(now, self.last_offset)

    def flush(self) -> dict[bytes, bytes | None]:
        emits, writes = self.op.flush()
        assert emits == []
        self.pending.update(writes)
        return writes

    def checkpoint(self) -> dict[bytes, bytes | None]:
        writes = self.flush()
        self.store.apply(self.pending, {})
        self.pending = {}
        self.op.committed()
        return writes


def stored_state(store: RocksStore) -> dict[tuple[str, str, str], Any]:
    out = {}
    for k, v in store.range(b"s", b"t"):
        n = k[2]
        out[(k[1:2].decode(), k[3:3 + n].decode(), k[3 + n:].decode())] = orjson.loads(v)
    return out


def stored_timers(store: RocksStore) -> list[tuple[str, int, str]]:
    return [(k[1:2].decode(), unpack_ts(k[2:10]), k[10:].decode()) for k, _ in store.range(b"t", b"u")]


def values(out: list[Any]) -> list[Any]:
    return [r[1] for r in out]


# -- keyed state ---------------------------------------------------------------------------------


def test_value_state_is_per_key_and_cleared_state_leaves_the_store(tmp_path: Path) -> None:
    def fn(ctx: Any, key: Any, value: Any) -> None:
        s = ctx.state.value("last")
        ctx.emit(s.get("none"))
        if value == "clear":
            s.clear()
        elif value == "null":
            s.set(None)
        else:
            s.set(value)

    store = RocksStore(tmp_path / "s")
    d = Driver(store, fn)
    out = d.feed([rec("a", {"x": 1}, 0, 0), rec("b", 5, 0, 1), rec("a", [1, 2], 0, 2)])
    assert values(out) == ["none", "none", {"x": 1}]
    d.checkpoint()
    assert stored_state(store) == {("v", "last", "a"): [1, 2], ("v", "last", "b"): 5}

    out = d.feed([rec("a", "clear", 0, 3), rec("b", "null", 0, 4), rec("c", 7, 0, 5),
                  rec("c", "clear", 0, 6), rec("a", "again", 0, 7)])
    assert values(out) == [[1, 2], 5, "none", 7, "none"]
    writes = d.checkpoint()
    assert stored_state(store) == {("v", "last", "a"): "again"}
    assert writes[b"sv\x04lastb"] is None  # b's value deleted
    assert not any(k.endswith(b"c") for k in writes)  # c set and cleared in one interval: no write

    d.feed([rec("a", "clear", 0, 8)])
    d.checkpoint()
    assert list(store.items()) == []


def test_state_is_snapshotted_on_write_and_copied_on_read(tmp_path: Path) -> None:
    def fn(ctx: Any, key: Any, value: Any) -> None:
        v, lst, m = ctx.state.value("v"), ctx.state.list("l"), ctx.state.map("m")
        x = {"n": [1]}
        v.set(x)
        lst.append(x)
        m.put("k", x)
        x["n"].append(2)
        got = v.get()
        got["n"].append(3)
        lst.get()[0]["n"].append(4)
        m.get("k")["n"].append(5)
        ctx.emit((v.get(), lst.get(), m.get("k")))

    d = Driver(RocksStore(tmp_path / "s"), fn)
    assert values(d.feed([rec("a", 1)])) == [({"n": [1]}, [{"n": [1]}], {"n": [1]})]


def test_list_state(tmp_path: Path) -> None:
    def fn(ctx: Any, key: Any, value: Any) -> None:
        lst = ctx.state.list("items")
        op, arg = value
        if op == "append":
            lst.append(arg)
        elif op == "extend":
            lst.extend(arg)
        elif op == "set":
            lst.set(arg)
        elif op == "clear":
            lst.clear()
        ctx.emit((lst.get(), len(lst)))

    store = RocksStore(tmp_path / "s")
    d = Driver(store, fn)
    out = d.feed([rec("a", ("append", 1), 0, 0), rec("a", ("extend", [2, {"x": 3}]), 0, 1),
                  rec("b", ("append", "b1"), 0, 2), rec("a", ("append", None), 0, 3)])
    assert values(out) == [([1], 1), ([1, 2, {"x": 3}], 3), (["b1"], 1), ([1, 2, {"x": 3}, None], 4)]
    d.checkpoint()
    assert stored_state(store) == {("l", "items", "a"): [1, 2, {"x": 3}, None], ("l", "items", "b"): ["b1"]}

    # a new operator (cold cache) reads what the store holds
    d2 = Driver(store, fn)
    out = d2.feed([rec("a", ("append", 5), 0, 4), rec("b", ("set", []), 0, 5), rec("a", ("set", [9]), 0, 6)])
    assert values(out) == [([1, 2, {"x": 3}, None, 5], 5), ([], 0), ([9], 1)]
    d2.checkpoint()
    assert stored_state(store) == {("l", "items", "a"): [9]}  # an empty list is not stored
    d2.feed([rec("a", ("clear", None), 0, 7)])
    d2.checkpoint()
    assert list(store.items()) == []


def test_cached_state_holds_just_its_bytes(tmp_path: Path) -> None:
    """Every element a cache keeps (a list state's items, read back from the store or
    appended; a map's values; a value) costs its JSON, not orjson's 4 KiB buffer."""
    from tests.traced import traced_bytes

    def fn(ctx: Any, key: Any, value: Any) -> None:
        ctx.state.list("l").append(value)
        ctx.state.map("m").put(value["i"], value)
        ctx.state.value("v").set(value)

    store = RocksStore(tmp_path / "s")
    n = 2000
    d = Driver(store, fn)
    with traced_bytes() as kept:
        d.feed([rec("a", {"i": i}, 0, i) for i in range(n)])
        appended = kept() / n
        d.checkpoint()
    cold = Driver(store, fn)  # reads the 2,000-element list and map back from the store
    with traced_bytes() as kept:
        cold.feed([rec("a", {"i": n}, 0, n)])
        loaded = kept() / n
    assert appended < 600 and loaded < 600, (appended, loaded)  # > 8 KiB with orjson's bytes


def test_map_state(tmp_path: Path) -> None:
    def fn(ctx: Any, key: Any, value: Any) -> None:
        m = ctx.state.map("m")
        op, *args = value
        if op == "put":
            m.put(*args)
        elif op == "remove":
            m.remove(*args)
        elif op == "clear":
            m.clear()
        ctx.emit((m.items(), m.keys(), m.values(), len(m), m.contains(1), 1 in m, m.get(1),
                  m.get("missing", "dflt")))

    store = RocksStore(tmp_path / "s")
    d = Driver(store, fn)
    out = d.feed([rec("a", ("put", 1, {"one": 1}), 0, 0), rec("a", ("put", "1", "str key"), 0, 1),
                  rec("b", ("put", "x", [1]), 0, 2), rec("a", ("remove", "nope"), 0, 3)])
    both = [(1, {"one": 1}), ("1", "str key")]
    assert values(out)[1] == (both, [1, "1"], [{"one": 1}, "str key"], 2, True, True, {"one": 1}, "dflt")
    assert values(out)[2] == ([("x", [1])], ["x"], [[1]], 1, False, False, None, "dflt")
    d.checkpoint()
    # keys keep their type through the store: 1 and "1" stay distinct
    d2 = Driver(store, fn)
    out = d2.feed([rec("a", ("remove", 1), 0, 4)])
    assert values(out) == [([("1", "str key")], ["1"], ["str key"], 1, False, False, None, "dflt")]
    d2.feed([rec("a", ("remove", "1"), 0, 5), rec("b", ("clear",), 0, 6)])
    d2.checkpoint()
    assert list(store.items()) == []


def test_state_names_are_namespaces_per_kind(tmp_path: Path) -> None:
    def fn(ctx: Any, key: Any, value: Any) -> None:
        ctx.state.value("x").set(1)
        ctx.state.list("x").append(2)
        ctx.state.map("x").put("k", 3)
        ctx.state.value("xy").set(4)

    store = RocksStore(tmp_path / "s")
    d = Driver(store, fn)
    d.feed([rec("a", 0), rec("ab", 0, 0, 1)])
    d.checkpoint()
    assert stored_state(store) == {
        ("v", "x", "a"): 1, ("l", "x", "a"): [2], ("m", "x", "a"): [["k", 3]], ("v", "xy", "a"): 4,
        ("v", "x", "ab"): 1, ("l", "x", "ab"): [2], ("m", "x", "ab"): [["k", 3]], ("v", "xy", "ab"): 4,
    }


def test_tombstones_reach_the_function_and_skipped_offsets_do_not(tmp_path: Path) -> None:
    seen = []

    def fn(ctx: Any, key: Any, value: Any) -> None:
        seen.append((key, value, ctx.offset))

    d = Driver(RocksStore(tmp_path / "s"), fn, skip_below=2)
    d.feed([rec("a", 1, 0, 0), rec("a", None, 0, 1), rec("a", None, 0, 2), rec("b", 3, 0, 3)])
    assert seen == [("a", None, 2), ("b", 3, 3)]


def test_emit_defaults_and_overrides(tmp_path: Path) -> None:
    def fn(ctx: Any, key: Any, value: Any) -> None:
        ctx.emit("plain")
        ctx.emit("rekeyed", key="other", timestamp=5)
        ctx.emit("null key", key=None)

    d = Driver(RocksStore(tmp_path / "s"), fn)
    assert d.feed([rec("a", 0, 100, 7)]) == [("a", "plain", 100, 7), ("other", "rekeyed", 5, 7),
                                             (None, "null key", 100, 7)]


# -- timers ------------------------------------------------------------------------------------------


def _timer_fns() -> tuple[Callable[..., Any], Callable[..., Any]]:
    def fn(ctx: Any, key: Any, value: Any) -> None:
        for ts in value.get("reg", []):
            ctx.timers.register_event_time(ts)
        for ts in value.get("del", []):
            ctx.timers.delete_event_time(ts)
        ctx.emit(("rec", ctx.watermark, ctx.time_domain))

    def on_timer(ctx: Any, key: Any, ts: int) -> None:
        ctx.emit(("timer", ctx.watermark, ctx.time_domain))
        if key == "a" and ts == 150:
            ctx.timers.register_event_time(160)  # due already: fires in this loop
        if key == "b" and ts == 200:
            ctx.timers.register_event_time(120)  # in the past: fires in this loop, next
            ctx.timers.register_event_time(1000)  # later
            ctx.timers.delete_event_time(250)
        if key == "c" and ts == 400:
            ctx.state.value("seen").set(ts)

    return fn, on_timer


def test_event_time_timers_fire_in_order_when_the_watermark_passes(tmp_path: Path) -> None:
    fn, on_timer = _timer_fns()
    store = RocksStore(tmp_path / "s")
    d = Driver(store, fn, on_timer)
    out = d.feed([rec("a", {"reg": [300, 150, 150]}, 100, 0), rec("b", {"reg": [250, 200]}, 100, 1),
                  rec("c", {"reg": [180, 400], "del": [180]}, 100, 2)])
    assert [r[1][0] for r in out] == ["rec"] * 3
    # the record sees watermark 100; after it the watermark is 200: timers <= 200 fire, in
    # time order, carrying the batch's last offset (a@150 registers a@160 and b@200 b@120,
    # both already due: they fire in the same loop)
    assert d.feed([rec("z", {}, 200, 3)]) == [
        ("z", ("rec", 100, None), 200, 3),
        ("a", ("timer", 200, "event_time"), 150, 3),
        ("a", ("timer", 200, "event_time"), 160, 3),
        ("b", ("timer", 200, "event_time"), 200, 3),
        ("b", ("timer", 200, "event_time"), 120, 3),
    ]
    assert d.feed([rec("z", {}, 240, 4), rec("z", {}, 240, 5)]) == [
        ("z", ("rec", 200, None), 240, 4), ("z", ("rec", 240, None), 240, 5)]
    d.checkpoint()
    assert stored_timers(store) == [("e", 300, "a"), ("e", 400, "c"), ("e", 1000, "b")]

    # an idle advance fires the rest, in time order; c@180 was deleted, b@250 too
    assert d.advance(2000) == [("a", ("timer", 2000, "event_time"), 300, 5),
                               ("c", ("timer", 2000, "event_time"), 400, 5),
                               ("b", ("timer", 2000, "event_time"), 1000, 5)]
    assert d.advance(3000) == []
    d.checkpoint()
    assert stored_timers(store) == []
    assert stored_state(store) == {("v", "seen", "c"): 400}


def test_batch_boundaries_do_not_change_timer_firings(tmp_path: Path) -> None:
    fn, on_timer = _timer_fns()
    records = [rec("a", {"reg": [300, 150]}, 100, 0), rec("b", {"reg": [250, 200]}, 110, 1),
               rec("c", {"reg": [180, 400], "del": [180]}, 140, 2), rec("z", {}, 200, 3),
               rec("z", {"reg": [190]}, 240, 4), rec("z", {}, 420, 5), rec("a", {}, 430, 6),
               rec("z", {}, 2000, 7), rec("z", {}, 2001, 8)]
    runs = []
    for i, sizes in enumerate([[1] * 9, [9], [2, 3, 4], [4, 1, 4]]):
        d = Driver(RocksStore(tmp_path / str(i)), fn, on_timer, delay_ms=10)
        out, at = [], 0
        for size in sizes:
            out += d.feed(records[at:at + size])
            at += size
        runs.append(out)
        offsets = [r[3] for r in out]
        assert offsets == sorted(offsets)
    assert runs[1] == runs[0] and runs[2] == runs[0] and runs[3] == runs[0]
    assert [(r[0], r[2]) for r in runs[0] if r[1][0] == "timer"] == [
        ("a", 150), ("a", 160), ("z", 190), ("b", 200), ("b", 120), ("a", 300), ("c", 400), ("b", 1000)]


def test_processing_time_timers(tmp_path: Path) -> None:
    now = [1_000]

    def fn(ctx: Any, key: Any, value: Any) -> None:
        ctx.timers.register_processing_time(ctx.timers.current_processing_time() + value)

    def on_timer(ctx: Any, key: Any, ts: int) -> None:
        ctx.emit((ctx.time_domain, ctx.timers.current_processing_time(), ctx.watermark))
        if key == "a" and ts == 1500:
            ctx.timers.register_processing_time(1400)  # passed: fires in this loop
            ctx.timers.register_processing_time(2500)

    store = RocksStore(tmp_path / "s")
    d = Driver(store, fn, on_timer, now=now)
    assert d.feed([rec("a", 500, 10**12, 0), rec("b", 200, 10**12, 1), rec("c", 0, 10**12, 2)]) == []
    assert d.advance(10**13) == []  # event time does not fire processing-time timers
    d.checkpoint()
    assert stored_timers(store) == [("p", 1000, "c"), ("p", 1200, "b"), ("p", 1500, "a")]
    assert d.tick(1100) == [("c", ("processing_time", 1100, 10**13), 1000, 2)]
    assert [(r[0], r[2]) for r in d.tick(1600)] == [("b", 1200), ("a", 1500), ("a", 1400)]
    assert d.tick(2000) == []
    assert [(r[0], r[2]) for r in d.tick(3000)] == [("a", 2500)]
    d.checkpoint()
    assert stored_timers(store) == []


# -- checkpoints and crashes ---------------------------------------------------------------------------


def test_committed_state_and_timers_survive_a_crash_uncommitted_ones_do_not(tmp_path: Path) -> None:
    def fn(ctx: Any, key: Any, value: Any) -> None:
        ctx.state.value("v").set(value["v"])
        ctx.timers.register_event_time(value["t"])
        if "p" in value:
            ctx.timers.register_processing_time(value["p"])

    def on_timer(ctx: Any, key: Any, ts: int) -> None:
        ctx.emit((ctx.time_domain, ctx.state.value("v").get()))

    path = tmp_path / "s"
    store = RocksStore(path)
    d = Driver(store, fn, on_timer, now=[0])
    d.feed([rec("a", {"v": 1, "t": 1000, "p": 5000}, 10, 0)])
    d.checkpoint()
    wm_state = d.wm.state()
    d.feed([rec("b", {"v": 2, "t": 900, "p": 100}, 20, 1), rec("a", {"v": 3, "t": 800}, 20, 2)])
    d.flush()  # flushed but never committed
    d.feed([rec("c", {"v": 4, "t": 700}, 30, 3)])
    d.op.discard()
    store.close()

    store = RocksStore(path)  # restart
    assert stored_state(store) == {("v", "v", "a"): 1}
    assert stored_timers(store) == [("e", 1000, "a"), ("p", 5000, "a")]
    d = Driver(store, fn, on_timer, watermark_state=wm_state, now=[0], skip_below=1)
    assert d.feed([rec("z", {"v": 0, "t": 10**6}, 2000, 1)]) == [("a", ("event_time", 1), 1000, 1)]
    # due processing-time timers fire on the first call after the restore
    assert d.tick(10_000) == [("a", ("processing_time", 1), 5000, 1)]


def test_work_between_flush_and_commit_is_kept(tmp_path: Path) -> None:
    def fn(ctx: Any, key: Any, value: Any) -> None:
        ctx.state.value("v").set(value)
        ctx.timers.register_event_time(value)

    def on_timer(ctx: Any, key: Any, ts: int) -> None:
        ctx.emit(ctx.state.value("v").get())

    store = RocksStore(tmp_path / "s")
    d = Driver(store, fn, on_timer, cache_max_entries=0)
    d.feed([rec("a", 100, 0, 0)])
    d.flush()
    d.feed([rec("b", 150, 10, 1)])  # after the flush, before its commit
    store.apply(d.pending, {})
    d.pending = {}
    d.op.committed()  # the cache is trimmed, but not of b's unflushed state
    assert stored_timers(store) == [("e", 100, "a")]
    assert d.advance(200) == [("a", 100, 100, 1), ("b", 150, 150, 1)]
    d.checkpoint()
    assert stored_timers(store) == []
    assert stored_state(store) == {("v", "v", "a"): 100, ("v", "v", "b"): 150}


def _counting_fns() -> tuple[Callable[..., Any], Callable[..., Any]]:
    def fn(ctx: Any, key: Any, value: Any) -> None:
        count = ctx.state.value("n")
        n = count.get(0) + 1
        count.set(n)
        seen = ctx.state.list("seen")
        seen.append(value)
        ctx.emit(("count", n, ctx.watermark))
        ctx.timers.register_event_time(ctx.timestamp + 100)
        if n % 3 == 0:
            ctx.timers.delete_event_time(ctx.timestamp + 100)

    def on_timer(ctx: Any, key: Any, ts: int) -> None:
        count = ctx.state.value("n")
        ctx.emit(("timer", count.get(0), ctx.state.list("seen").get()))
        count.clear()
        ctx.state.list("seen").clear()

    return fn, on_timer


def _records(n: int) -> list[tuple[Any, Any, int, int]]:
    out, t = [], 0
    for i in range(n):
        t += (i * 37) % 50
        out.append(rec(f"k{(i * 7) % 5}", i, t - (i * 13) % 20, i))
    return out


def test_replay_after_a_crash_gives_the_outputs_of_an_uncrashed_run(tmp_path: Path) -> None:
    fn, on_timer = _counting_fns()
    records = _records(60)

    clean = Driver(RocksStore(tmp_path / "clean"), fn, on_timer, delay_ms=20)
    expected = []
    for i in range(0, 60, 7):
        expected += clean.feed(records[i:i + 7])
        clean.checkpoint()
    expected += clean.advance(10**9)
    assert any(r[1][0] == "timer" for r in expected)

    path = tmp_path / "crashed"
    store = RocksStore(path)
    d = Driver(store, fn, on_timer, delay_ms=20, cache_max_entries=2)
    got = []
    for i in range(0, 21, 7):
        got += d.feed(records[i:i + 7])
    d.checkpoint()
    position, wm_state = 21, d.wm.state()
    d.feed(records[21:30])
    d.flush()
    d.feed(records[30:33])
    d.op.discard()
    store.close()

    store = RocksStore(path)
    d = Driver(store, fn, on_timer, delay_ms=20, skip_below=position, watermark_state=wm_state)
    d.last_offset = position - 1
    at = position - 4  # the input is re-read from before the checkpoint: skip_below ignores that
    for size in (5, 11, 1, 2):
        got += d.feed(records[at:at + size])
        at += size
        if size == 11:
            d.checkpoint()
    got += d.feed(records[at:])
    got += d.advance(10**9)
    assert got == expected


# -- the login alert example --------------------------------------------------------------------------

DELAY_MS = 2_000
T0 = 1_700_000_000_000


def login_records(events: list[tuple[int, str, int, int]]) -> list[tuple[Any, Any, int, int]]:
    """(user, event, gap, jitter) -> records with base times advancing by gap, event time
    base - jitter: each record is at most `jitter` older than the newest before it."""
    out, base = [], T0
    for i, (user, event, gap, jitter) in enumerate(events):
        base += gap
        u = f"u{user}"
        ts = base - jitter
        value = None if event == "tombstone" else {"user": u, "event": event, "ts": ts, "ip": "10.0.0.1"}
        out.append((u, value, ts, i))
    return out


def login_oracle(records: list[tuple[Any, Any, int, int]]) -> list[tuple[Any, Any, int, int]]:
    """Brute force: per user, all failures since the last success/alert, looked at from scratch."""
    since: dict[str, list[int]] = defaultdict(list)
    out = []
    for user, value, ts, offset in records:
        if value is None or value["event"] == "login_ok":
            since[user] = []
            continue
        since[user].append(ts)
        newest = max(since[user])
        recent = sorted(t for t in since[user] if newest - t < 60_000)
        if len(recent) >= 3:
            out.append((user, {"user": user, "failures": len(recent), "first_failure_ts": recent[0],
                               "last_failure_ts": recent[-1], "alert": "3 failed logins within 1 minute"},
                        ts, offset))
            since[user] = []
    return out


def run_logins(path: Path, records: list[Any], plan: list[tuple[int, str]],
               cache: int = 100_000) -> list[Any]:
    """Feed `records` in batches of the plan's sizes; after each batch: nothing, flush, checkpoint,
    or crash (discard, restart from the last checkpoint). Returns the committed outputs."""
    store = RocksStore(path)
    d = Driver(store, login.on_login, login.on_login_timer, delay_ms=DELAY_MS, cache_max_entries=cache)
    committed: list[Any] = []
    pending: list[Any] = []
    at, saved = 0, (0, d.wm.state(), -1)
    steps = iter(plan)
    while at < len(records):
        size, action = next(steps, (7, "checkpoint"))
        batch = records[at:at + size]
        pending += d.feed(batch)
        at += len(batch)
        if action == "flush":
            d.flush()
        elif action == "checkpoint":
            d.checkpoint()
            committed += pending
            pending = []
            saved = (at, d.wm.state(), d.last_offset)
        elif action == "crash":
            d.op.discard()
            pending = []
            at, wm_state, last = saved
            d = Driver(store, login.on_login, login.on_login_timer, delay_ms=DELAY_MS,
                       watermark_state=wm_state, skip_below=at, cache_max_entries=cache)
            d.last_offset = last
    pending += d.advance(d.wm.current + 10 * 60_000)  # everyone goes quiet
    d.checkpoint()
    committed += pending
    leftover = list(store.items())
    store.close()
    assert leftover == [], "quiet users leave no state and no timers behind"
    return committed


login_event = st.tuples(
    st.integers(0, 2),  # user
    st.sampled_from(["login_failed"] * 8 + ["login_ok", "tombstone"]),
    st.one_of(st.integers(0, 3_000), st.integers(0, 30_000), st.integers(50_000, 120_000)),  # gap
    st.integers(0, DELAY_MS))  # disorder
events_strategy = st.integers(0, 80).flatmap(
    lambda n: st.lists(login_event, min_size=n, max_size=n))
plan_strategy = st.lists(st.tuples(st.integers(1, 12),
                                   st.sampled_from(["none", "none", "flush", "checkpoint", "crash"])),
                         max_size=12)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=events_strategy, plan=plan_strategy, cache=st.sampled_from([1, 100_000]))
def test_login_alerts_match_a_brute_force_oracle(events: list[Any], plan: list[Any], cache: int) -> None:
    records = login_records(events)
    with tempfile.TemporaryDirectory() as tmp:
        assert run_logins(Path(tmp) / "s", records, plan, cache) == login_oracle(records)


def test_login_alerts_alert_once_per_burst(tmp_path: Path) -> None:
    fail = "login_failed"
    events = [(0, fail, 0, 0), (0, fail, 10_000, 0), (1, fail, 1_000, 0), (0, fail, 10_000, 0),
              (0, fail, 1_000, 0), (0, fail, 1_000, 0), (1, "login_ok", 0, 0), (1, fail, 0, 0),
              (1, fail, 0, 0), (0, fail, 1_000, 0)]
    records = login_records(events)
    out = run_logins(tmp_path / "s", records, [])
    assert out == login_oracle(records)
    assert [(r[0], r[1]["failures"], r[3]) for r in out] == [("u0", 3, 3), ("u0", 3, 9)]


def test_login_state_stays_bounded_as_users_go_quiet(tmp_path: Path) -> None:
    store = RocksStore(tmp_path / "s")
    d = Driver(store, login.on_login, login.on_login_timer, delay_ms=DELAY_MS)
    records, users = [], 3_000
    for u in range(users):  # user u fails twice around T0 + u s, then is never seen again
        for j in range(2):
            ts = T0 + u * 1_000 + j * 300
            records.append((f"u{u}", {"user": f"u{u}", "event": "login_failed", "ts": ts}, ts,
                            len(records)))
    sizes = []
    for i in range(0, len(records), 200):
        d.feed(records[i:i + 200])
        d.checkpoint()
        sizes.append(sum(1 for _ in store.items()))
    state_users = {key for (_, _, key) in stored_state(store)}
    timer_users = {key for (_, _, key) in stored_timers(store)}
    # only users active within the last minute (+ out-of-orderness) still have state
    last = records[-1][2]
    recent = {r[0] for r in records if r[2] > last - DELAY_MS - 60_000}
    assert state_users <= recent and timer_users <= recent
    assert len(state_users) >= 55
    assert max(sizes) < 200  # never more than about a minute's worth of users
    d.advance(last + 61_000)
    d.checkpoint()
    assert list(store.items()) == []


def test_failed_logins_topology_loads() -> None:
    loaded = load_spec(TOPOLOGIES / "failed_logins.yaml")
    step = loaded.spec.pipelines[0].steps[0]
    assert step.process.python == "login_alerts:on_login"  # type: ignore[union-attr]
    assert step.process.on_timer == "login_alerts:on_login_timer"  # type: ignore[union-attr]
    assert step.process.store == "failures"  # type: ignore[union-attr]
    assert loaded.spec.sources["logins"].watermark.max_out_of_orderness == 2_000  # type: ignore[union-attr]


def test_login_functions_resolve_from_the_topology_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(TOPOLOGIES))
    assert load_callable("login_alerts:on_login").__name__ == "on_login"
    assert load_callable("login_alerts:on_login_timer").__name__ == "on_login_timer"


# -- errors ------------------------------------------------------------------------------------------


def test_a_failing_function_names_its_record(tmp_path: Path) -> None:
    def fn(ctx: Any, key: Any, value: Any) -> None:
        ctx.emit(1 / value)

    d = Driver(RocksStore(tmp_path / "s"), fn)
    with pytest.raises(StepFailed) as info:
        d.feed([rec("a", 1, 5, 0), rec("b", 0, 6, 1)])
    assert info.value.step == STEP
    assert info.value.record == ("b", 0, 6, 1)
    assert isinstance(info.value.cause, ZeroDivisionError)


def test_a_failing_timer_names_key_and_time(tmp_path: Path) -> None:
    def fn(ctx: Any, key: Any, value: Any) -> None:
        ctx.timers.register_event_time(50)

    def on_timer(ctx: Any, key: Any, ts: int) -> None:
        raise RuntimeError("boom")

    d = Driver(RocksStore(tmp_path / "s"), fn, on_timer)
    d.feed([rec("a", 1, 5, 0)])
    with pytest.raises(StepFailed) as info:
        d.feed([rec("b", 1, 60, 1)])
    assert info.value.record == ("a", None, 50, 1)
    assert str(info.value) == "RuntimeError: boom"


def test_timers_need_on_timer(tmp_path: Path) -> None:
    def fn(ctx: Any, key: Any, value: Any) -> None:
        ctx.timers.register_event_time(10)

    d = Driver(RocksStore(tmp_path / "s"), fn)
    with pytest.raises(StepFailed) as info:
        d.feed([rec("a", 1, 5, 3)])
    assert isinstance(info.value.cause, ValueError)
    assert "needs `on_timer:` in the process step" in str(info.value.cause)
    assert info.value.record == ("a", 1, 5, 3)


@pytest.mark.parametrize(("action", "error", "message"), [
    (lambda ctx: ctx.state.value("v").set({1, 2}), TypeError, ""),
    (lambda ctx: ctx.state.map("m").put((1, 2), 1), TypeError, "map state key"),
    (lambda ctx: ctx.timers.register_event_time(1.5), TypeError, "must be an int"),
    (lambda ctx: ctx.state.value("").get(), ValueError, "1 to 255 bytes"),
])
def test_bad_state_and_timer_use_fails_in_the_call(tmp_path: Path, action: Callable[[Any], Any],
                                                   error: type[Exception], message: str) -> None:
    d = Driver(RocksStore(tmp_path / "s"), lambda ctx, key, value: action(ctx), lambda *a: None)
    with pytest.raises(StepFailed) as info:
        d.feed([rec("a", 1)])
    assert isinstance(info.value.cause, error)
    assert message in str(info.value.cause)


def test_a_null_key_fails(tmp_path: Path) -> None:
    d = Driver(RocksStore(tmp_path / "s"), lambda ctx, key, value: None)
    with pytest.raises(StepFailed, match="needs a key"):
        d.feed([rec(None, 1)])


def test_operator_contract(tmp_path: Path) -> None:
    op = ProcessFunction(STEP, "st", lambda *a: None, None, KEYS.encode, KEYS.decode, Clock())
    op.bind(RocksStore(tmp_path / "s"))
    assert op.stateful and op.late == [] and op.late_count == 0
    assert op.process([]) == [] and op.on_watermark(10, 0) == [] and op.on_processing_time(10, 0) == []
    assert op.flush() == ([], {})
