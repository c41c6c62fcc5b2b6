"""Event time end to end on the real broker: windows over a repartition topic, kill -9 in the
middle of windows, an idle input partition, late records, and process-function timers that
survive a restore from the changelog.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from processor.examples.revenue import sample_orders
from processor.state import RocksStore
from processor.tools.generator import create_topic, produce_json
from tests.integration.kafka import WorkerProcess, read_all, topology_file

pytestmark = pytest.mark.integration

FLUSH_COUNTRY = "zz-flush"
HOUR_MS = 3_600_000


def _jittered_orders(n: int, seed: int, jitter_ms: int = 1000) -> list[tuple[str, dict[str, Any]]]:
    """Orders 10 ms apart in event time, each moved by up to +-jitter: out of order, but never
    by more than the dashboard's 2 s max_out_of_orderness, so no order is late."""
    rng = random.Random(seed)
    out = []
    for key, order in sample_orders(n, users=300, seed=seed):
        order["ts"] += rng.randint(-jitter_ms, jitter_ms)
        out.append((key, order))
    return out


def _flush_records(partitions: int, ts: int) -> list[tuple[str, dict[str, Any], int]]:
    """One far-future order per partition: the watermark then passes every earlier window."""
    return [(f"flush-{p}", {"user": "flush", "amount": 1.0, "status": "paid",
                            "country": FLUSH_COUNTRY, "ts": ts}, p) for p in range(partitions)]


def gmv_oracle(orders: list[tuple[str, dict[str, Any]]]) -> dict[tuple[str, int], tuple[int, float]]:
    acc: dict[tuple[str, int], list[float]] = {}
    for _, o in orders:
        if o["status"] == "paid" and o["amount"] > 0 and o["country"] != FLUSH_COUNTRY:
            a = acc.setdefault((o["country"], o["ts"] // 1000 * 1000), [0, 0.0])
            a[0] += 1
            a[1] += o["amount"]
    return {k: (int(n), round(gmv, 2)) for k, (n, gmv) in acc.items()}


class GmvScenario:
    def __init__(self, bootstrap: str, tmp: Path, unique: str, guarantee: str) -> None:
        self.bootstrap, self.tmp, self.guarantee = bootstrap, tmp, guarantee
        self.input, self.output = f"orders-{unique}", f"gmv-{unique}"
        self.late = f"gmv-late-{unique}"
        self.topology = topology_file(tmp, "gmv_dashboard.yaml", f"gmv-{unique}", {
            "name: gmv-dashboard": f"name: gmv-{unique}",
            "topic: orders": f"topic: {self.input}",
            "topic: gmv-per-second": f"topic: {self.output}",
            "topic: gmv-late-orders": f"topic: {self.late}",
        })
        create_topic(bootstrap, self.input, 4)
        self.orders: list[tuple[str, dict[str, Any]]] = []

    def produce(self, n: int, seed: int = 3) -> None:
        self.orders = _jittered_orders(n, seed)
        produce_json(self.bootstrap, self.input, self.orders)
        end = max(o["ts"] for _, o in self.orders) + HOUR_MS
        produce_json(self.bootstrap, self.input, _flush_records(4, end))

    def worker(self, **kwargs: Any) -> WorkerProcess:
        return WorkerProcess(self.topology, self.bootstrap, self.tmp / "state", self.tmp,
                             guarantee=self.guarantee, **kwargs)

    def results(self) -> tuple[dict[tuple[str, int], tuple[int, float]], int]:
        """Window results by (country, second), and how many emissions repeated a window."""
        seen: dict[tuple[str, int], set[tuple[int, float]]] = {}
        emissions = 0
        for _, value, _ in read_all(self.bootstrap, self.output):
            v = orjson.loads(value)
            seen.setdefault((v["country"], v["second"]), set()).add((v["orders"], v["gmv"]))
            emissions += 1
        conflicting = {k: vals for k, vals in seen.items() if len(vals) > 1}
        assert not conflicting, f"a window was emitted with different results: {conflicting}"
        return {k: next(iter(vals)) for k, vals in seen.items()}, emissions - len(seen)


def _assert_matches(got: dict, want: dict) -> None:
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    wrong = [(k, got[k], want[k]) for k in want.keys() & got.keys() if got[k] != want[k]]
    assert not (missing or extra or wrong), (
        f"{len(want)} windows expected; missing {missing[:5]}, unexpected {extra[:5]}, "
        f"wrong {wrong[:5]}")


@pytest.mark.parametrize("guarantee", ["exactly_once", "at_least_once"])
def test_tumbling_windows_over_repartition_equal_oracle(broker, tmp_path, unique, guarantee):
    sc = GmvScenario(broker.bootstrap, tmp_path, unique, guarantee)
    sc.produce(12_000)
    w = sc.worker()
    assert w.wait(180) == 0, w.log_text()
    got, repeats = sc.results()
    _assert_matches(got, gmv_oracle(sc.orders))
    assert repeats == 0, f"{repeats} windows were emitted more than once without a crash"
    assert read_all(broker.bootstrap, sc.late) == [], "no order is late in this input"


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
@pytest.mark.parametrize("point", ["batch.processed:5", "checkpoint.after_changelog:5"])
def test_kill_mid_window_then_restart_equals_uncrashed(broker, tmp_path, unique, guarantee, point):
    sc = GmvScenario(broker.bootstrap, tmp_path, unique, guarantee)
    sc.produce(12_000)
    env = {"PROCESSOR_BATCH_SIZE": "300"}
    crashed = sc.worker(idle="5s", commit_interval="20ms",
                        env={**env, "PROCESSOR_CRASH_AT": point})
    assert crashed.wait(120) == -9, f"not killed at {point}:\n{crashed.log_text()}"
    done = sc.worker(env=env)
    assert done.wait(180) == 0, done.log_text()
    got, repeats = sc.results()
    # the oracle is what the uncrashed run emits (test above); re-emitted windows must agree
    _assert_matches(got, gmv_oracle(sc.orders))
    if guarantee == "exactly_once":
        broker.require_aborted_isolation("that no window is emitted twice after kill -9")
        assert repeats == 0, f"{repeats} windows were emitted again after the kill under EOS"


IDLE_TOPOLOGY = """
name: {name}
sources:
  orders:
    topic: {input}
    timestamp: {{field: ts}}
    watermark: {{max_out_of_orderness: 0s{idle}}}
pipelines:
  - from: orders
    steps:
      - key_by: "value['country']"
      - window: {{tumbling: 1s, emit: final, late: drop}}
      - aggregate: {{orders: count()}}
      - map: "{{'country': key, 'second': value['window_start'], 'orders': value['orders']}}"
      - to: {{topic: {output}, partitions: 2}}
"""


@pytest.mark.parametrize("idle_timeout", ["1s", None])
def test_idle_partition_stops_holding_back_windows_after_idle_timeout(
        broker, tmp_path, unique, idle_timeout):
    name = f"idle-{unique}"
    src, out = f"idle-in-{unique}", f"idle-out-{unique}"
    topology = tmp_path / "idle.yaml"
    topology.write_text(IDLE_TOPOLOGY.format(
        name=name, input=src, output=out,
        idle=f", idle_timeout: {idle_timeout}" if idle_timeout else ""))
    create_topic(broker.bootstrap, src, 4)
    # input only on partitions 0 and 1; partitions 2 and 3 stay silent
    orders = [(k, o, i % 2) for i, (k, o) in enumerate(sample_orders(2_000, seed=5))]
    produce_json(broker.bootstrap, src, orders)
    end = max(o["ts"] for _, o, _ in orders) + HOUR_MS
    produce_json(broker.bootstrap, src, _flush_records(2, end))
    w = WorkerProcess(topology, broker.bootstrap, tmp_path / "state", tmp_path, idle="6s")
    assert w.wait(120) == 0, w.log_text()
    got = {(v["country"], v["second"]): v["orders"]
           for v in (orjson.loads(r[1]) for r in read_all(broker.bootstrap, out))}
    want = Counter((o["country"], o["ts"] // 1000 * 1000) for _, o, _ in orders)
    if idle_timeout:
        assert got == dict(want), ("after idle_timeout the silent partitions must not hold "
                                   f"back:\n{w.log_text()}")
        assert sum(r.get("msg") == "input partition idle" for r in w.logs()) >= 2
    else:
        assert got == {}, ("without idle_timeout the silent partitions hold the watermark: "
                           f"no window may close, got {len(got)}")


def test_bounded_run_reports_the_silent_partitions_and_the_windows_left_open(
        broker, tmp_path, unique):
    """The run above without idle_timeout ends with every window open: the worker says why."""
    src, out = f"open-in-{unique}", f"open-out-{unique}"
    topology = tmp_path / "open.yaml"
    topology.write_text(IDLE_TOPOLOGY.format(name=f"open-{unique}", input=src, output=out,
                                             idle=""))
    create_topic(broker.bootstrap, src, 4)
    orders = [(k, o, i % 2) for i, (k, o) in enumerate(sample_orders(500, seed=7))]
    produce_json(broker.bootstrap, src, orders)
    end = max(o["ts"] for _, o, _ in orders) + HOUR_MS
    produce_json(broker.bootstrap, src, _flush_records(2, end))
    w = WorkerProcess(topology, broker.bootstrap, tmp_path / "state", tmp_path, idle="6s")
    assert w.wait(120) == 0, w.log_text()
    assert read_all(broker.bootstrap, out) == []
    (report,) = [r for r in w.logs() if r["msg"].startswith("bounded run ended")]
    windows = {(o["country"], o["ts"] // 1000) for _, o, _ in orders} | {(FLUSH_COUNTRY, end // 1000)}
    assert report["open_windows"] == len(windows), report
    assert report["pending_by_step"] == {"pipelines[0].steps[1]": {"windows": len(windows)}}
    assert report["pending_timers"] == 0
    # partitions 2 and 3 never had a record: they hold the watermark; 0 and 1 reached `end`
    assert report["watermark_held_back_by"] == [
        {"partition": f"{src}[{p}]", "watermark": None, "others": end} for p in (2, 3)]
    assert f"watermark held back by {src}[2] never heard from" in report["msg"]
    # the CLI prints the same report for a person, on stdout
    text = w.log_path.read_text()
    assert f"bounded run ended with {len(windows)} windows open and 0 timers pending:" in text
    assert f"    {src}[3] never heard from (no record, no idle_timeout)" in text


LATE_TOPOLOGY = """
name: {name}
sources:
  events: {{topic: {input}, timestamp: {{field: ts}}}}
pipelines:
  - from: events
    steps:
      - window: {{tumbling: 1s, allowed_lateness: 0s, emit: final,
                  late: {{topic: {late}, partitions: 1}}}}
      - aggregate: {{n: count(), ids: "max(value['id'])"}}
      - to: {{topic: {output}, partitions: 1}}
"""


def test_late_records_go_to_the_late_topic_with_window_and_watermark_headers(
        broker, tmp_path, unique):
    src, out, late = f"late-in-{unique}", f"late-out-{unique}", f"late-late-{unique}"
    topology = tmp_path / "late.yaml"
    topology.write_text(LATE_TOPOLOGY.format(name=f"late-{unique}", input=src, output=out,
                                             late=late))
    create_topic(broker.bootstrap, src, 1)
    times = [1000, 2500, 1200, 2600, 1999, 5000]  # 1200 and 1999 arrive after W = 2500
    produce_json(broker.bootstrap, src, [("k", {"id": i, "ts": t}) for i, t in enumerate(times)])
    w = WorkerProcess(topology, broker.bootstrap, tmp_path / "state", tmp_path)
    assert w.wait(120) == 0, w.log_text()
    results = sorted((orjson.loads(v)["window_start"], orjson.loads(v)["n"])
                     for _, v, _ in read_all(broker.bootstrap, out))
    assert results == [(1000, 1), (2000, 2)]  # [5000, 6000) stays open
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"r-{unique}",
                  "isolation.level": "read_committed"})
    c.assign([TopicPartition(late, 0, 0)])
    msgs = []
    for _ in range(40):
        msgs += [m for m in c.consume(10, 0.5) if not m.error()]
        if len(msgs) >= 2:
            break
    c.close()
    assert [orjson.loads(m.value())["id"] for m in msgs] == [2, 4]
    headers = [{k: v.decode() for k, v in m.headers()} for m in msgs]
    assert headers[0]["processor.window.start"] == "1000"
    assert headers[0]["processor.window.end"] == "2000"
    assert headers[0]["processor.watermark"] == "2500"
    assert headers[0]["processor.source.offset"] == "2"
    assert headers[1]["processor.watermark"] == "2600"
    assert headers[1]["processor.source.topic"] == src


def test_login_alert_timers_survive_restore_from_changelog(broker, tmp_path, unique):
    src, alerts = f"logins-{unique}", f"alerts-{unique}"
    topology = topology_file(tmp_path, "failed_logins.yaml", f"logins-{unique}", {
        "name: failed-logins": f"name: logins-{unique}",
        "topic: logins": f"topic: {src}",
        "topic: login-alerts": f"topic: {alerts}",
    })
    create_topic(broker.bootstrap, src, 1)
    t0 = 1_700_000_000_000

    def login(user: str, event: str, ts: int) -> tuple[str, dict[str, Any]]:
        return user, {"user": user, "event": event, "ts": ts, "ip": "10.0.0.1"}

    produce_json(broker.bootstrap, src, [
        login("alice", "login_failed", t0), login("alice", "login_failed", t0 + 10_000),
        login("bob", "login_failed", t0 + 11_000),
    ])
    first = WorkerProcess(topology, broker.bootstrap, tmp_path / "state-1", tmp_path)
    assert first.wait(120) == 0, first.log_text()
    assert read_all(broker.bootstrap, alerts) == []

    # a new machine: empty state dir, so state AND timers come back from the changelog
    produce_json(broker.bootstrap, src, [
        login("alice", "login_failed", t0 + 20_000),   # third failure in 60 s: alert
        login("carol", "login_ok", t0 + 300_000),      # watermark passes bob's timer
    ])
    second = WorkerProcess(topology, broker.bootstrap, tmp_path / "state-2", tmp_path)
    assert second.wait(120) == 0, second.log_text()
    assert sum(r["records"] for r in second.logs() if r.get("msg") == "store restored") > 0
    got = [orjson.loads(v) for _, v, _ in read_all(broker.bootstrap, alerts)]
    assert [(a["user"], a["failures"]) for a in got] == [("alice", 3)]
    # bob's timer (registered before the restart) fired after the restore and purged his state
    store_dir = tmp_path / "state-2" / f"logins-{unique}" / "failures" / "0"
    store = RocksStore(store_dir, read_only=True)
    try:
        keys = [k for k, _ in store.items()]
    finally:
        store.close()
    assert not any(b"bob" in k for k in keys), f"bob's state should be purged by his timer: {keys}"


def _sessions_oracle(views: list[tuple[str, dict[str, Any]]], gap: int) -> dict[tuple[str, int], dict]:
    """Sessions per user from views sorted by time: a new session after `gap` of silence."""
    by_user: dict[str, list[dict[str, Any]]] = {}
    for user, v in views:
        by_user.setdefault(user, []).append(v)
    out = {}
    for user, vs in by_user.items():
        vs.sort(key=lambda v: v["ts"])
        session: list[dict[str, Any]] = []
        for v in [*vs, None]:
            if session and (v is None or v["ts"] - session[-1]["ts"] >= gap):
                pages: list[str] = []
                for s in session:
                    if s["page"] not in pages:
                        pages.append(s["page"])
                out[(user, session[0]["ts"])] = {
                    "end": session[-1]["ts"] + gap, "views": len(session),
                    "duration_s": (session[-1]["ts"] - session[0]["ts"]) / 1000,
                    "pages": sorted(pages)}
                session = []
            if v is not None:
                session.append(v)
    return out


def test_user_sessions_example_equals_oracle(broker, tmp_path, unique):
    src, out = f"views-{unique}", f"sessions-{unique}"
    topology = topology_file(tmp_path, "user_sessions.yaml", f"sessions-{unique}", {
        "name: user-sessions": f"name: sessions-{unique}",
        "topic: page-views": f"topic: {src}",
        "topic: user-sessions": f"topic: {out}",
    })
    create_topic(broker.bootstrap, src, 2)
    rng = random.Random(11)
    t0, minute = 1_700_000_000_000, 60_000
    views: list[tuple[str, dict[str, Any]]] = []
    for u in range(20):
        t = t0 + rng.randrange(10 * minute)
        for _ in range(rng.randrange(5, 40)):
            # mostly a few minutes apart, sometimes a break longer than the 30 min gap
            t += rng.choice([rng.randrange(1, 5 * minute)] * 5 + [rng.randrange(31, 90) * minute])
            views.append((f"user{u}", {"user": f"user{u}", "page": f"/p{rng.randrange(6)}", "ts": t}))
    views.sort(key=lambda kv: kv[1]["ts"])
    # bounded disorder (< the 10 s max_out_of_orderness): swap some neighbours
    for i in range(0, len(views) - 1, 7):
        if views[i + 1][1]["ts"] - views[i][1]["ts"] < 5_000:
            views[i], views[i + 1] = views[i + 1], views[i]
    produce_json(broker.bootstrap, src, views)
    end = max(v["ts"] for _, v in views) + 10 * HOUR_MS
    produce_json(broker.bootstrap, src, [(f"flush{p}", {"user": "flush", "page": "/", "ts": end}, p)
                                         for p in range(2)])
    w = WorkerProcess(topology, broker.bootstrap, tmp_path / "state", tmp_path)
    assert w.wait(120) == 0, w.log_text()
    got = {}
    for _, value, _ in read_all(broker.bootstrap, out):
        s = orjson.loads(value)
        got[(s["user"], s["start"])] = {"end": s["end"], "views": s["views"],
                                        "duration_s": s["duration_s"], "pages": sorted(s["pages"])}
    want = _sessions_oracle(views, 30 * minute)
    assert got == want
