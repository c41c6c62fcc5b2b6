"""Same results: every example topology with event time, run in batch over a file, gives the
records it gives streaming over the same data put on its topic (issue 16, item 4).

Each example gets seeded data of its domain (several keys, disorder, late records) written as
JSON lines. The batch side is BatchRun over the file (small `chunk_rows`, so windows, sessions
and timers span chunk boundaries), every output topic written to a file, late topics included.
The streaming side is the TopologyTestDriver fed the same rows in file order, in batches of
uneven sizes with `run()` between, then the end-of-input watermark (timeutil.watermark.END_OF_TIME).

Equality is exact, for 1 and 4 source partitions: the multiset of (key, value) of every final,
windowed or timer output and of every late-records topic. That holds because the data keeps
clear of the one thing that legitimately depends on how a run cuts its input into batches:
a task's watermark downstream of a repartition (and an operator's closing of windows and firing
of timers) moves at batch ends, and with 4 partitions it is the minimum over partitions whose
records interleave differently in the two runs. So disorder is either within the source's
`max_out_of_orderness` (never late, whatever the interleaving) or far beyond every window,
session gap and timer horizon plus the event time one batch spans (late in every run), never
in between; amounts are multiples of 0.25 so sums are exact in any order. Outputs emitted per
update (revenue_per_user: how many updates a checkpoint cadence emits differs) are compared on
the last record per key; with 4 partitions a user's orders reach the aggregate from several
source partitions in an interleaving that differs, so `last(country)` is compared only with 1.

fraud_detection is not here: it joins a `table` and a `broadcast` that a batch run reads from
their Kafka topics (runtime/batch/tables.py), which needs a broker.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from processor.examples import reconciliation as recon
from processor.runtime.batch.engine import BatchRun
from processor.runtime.config import WorkerConfig
from processor.spec import load_spec
from processor.spec.bounded import FileSinkSpec
from processor.spec.file_overrides import with_files
from processor.testing.driver import TopologyTestDriver
from processor.timeutil.watermark import END_OF_TIME
from tests.paths import REPO

TOPOLOGIES = REPO / "topologies"
T0 = 1_700_000_000_000
KEY = "__key"  # the column a file sink writes the record key to
CHUNK_ROWS = 64


# --- data ----------------------------------------------------------------------------------------

def orders_gmv(rng: random.Random, n: int = 3000) -> list[dict[str, Any]]:
    """An order every 20 ms over 8 countries, jittered within the 2 s bound; 3% of them 20-60 s
    late (their 1 s window, +1 s allowed lateness, closed long before: gmv-late-orders), from
    the 500th on (before that, a run's first batch, with no watermark yet, may hold them)."""
    countries = ["de", "fr", "it", "es", "nl", "pl", "se", "at"]
    rows = []
    for i in range(n):
        now = T0 + i * 20
        ts = now - rng.randrange(0, 1500)
        if i >= 500 and rng.random() < 0.03:
            ts = now - rng.randrange(20_000, 60_000)
        status = rng.choices(["paid", "pending", "cancelled"], [0.8, 0.1, 0.1])[0]
        amount = rng.randrange(0, 2000) / 4  # 0 .. 499.75: some zero, filtered out
        rows.append({"order_id": f"o{i}", "country": rng.choice(countries), "status": status,
                     "amount": amount, "ts": ts})
    return rows


def views(rng: random.Random, users: int = 12) -> list[dict[str, Any]]:
    """Page views of users in sessions (views 10 s - 5 min apart, sessions 40 min - 3 h apart)
    over a day, in arrival order: jitter within the 10 s bound, some views 1-4 min late (one
    bridges two sessions of its user into one, still open), 2% hours late (dropped)."""
    pages = ["/", "/search", "/item", "/cart", "/checkout", "/help", "/account"]
    events: list[tuple[int, dict[str, Any]]] = []  # (arrival time, view)
    for u in range(users):
        t = T0 + rng.randrange(0, 3_600_000)
        sessions = []
        while t < T0 + 86_400_000:
            times = [t]
            for _ in range(rng.randrange(1, 15)):
                times.append(times[-1] + rng.randrange(10_000, 300_000))
            sessions.append(times)
            t = times[-1] + rng.randrange(40 * 60_000, 3 * 3_600_000)
        for s, times in enumerate(sessions):
            for ts in times:
                arrival = ts + rng.randrange(0, 9_000)
                if rng.random() < 0.05:
                    arrival = ts + rng.randrange(60_000, 240_000)
                elif rng.random() < 0.02:
                    arrival = ts + rng.randrange(3_600_000, 4 * 3_600_000)
                events.append((arrival, {"user": f"u{u}", "page": rng.choice(pages), "ts": ts}))
            if s + 1 < len(sessions) and sessions[s + 1][0] - times[-1] < 55 * 60_000:
                bridge = times[-1] + (sessions[s + 1][0] - times[-1]) // 2  # < 30 min to both
                events.append((bridge + rng.randrange(60_000, 180_000),
                               {"user": f"u{u}", "page": "/back", "ts": bridge}))
    events.sort(key=lambda e: e[0])
    return [v for _, v in events]


def logins(rng: random.Random, users: int = 30, n: int = 4000) -> list[dict[str, Any]]:
    """Logins every 500 ms: mostly successes, bursts of failures (3 within a minute alert),
    jitter within the 2 s bound; a few failures 10-30 min late, at most one per user (a
    late failure meets only state its timer purged in every run)."""
    rows = []
    late_users: set[str] = set()
    burst: dict[str, int] = {}
    for i in range(n):
        now = T0 + i * 500
        user = f"u{rng.randrange(users)}"
        if burst.get(user, 0) > 0 or rng.random() < 0.15:
            burst[user] = burst.get(user, rng.randrange(1, 5)) - 1
            event = "login_failed"
        else:
            event = rng.choices(["login_ok", "login_failed"], [0.9, 0.1])[0]
        ts = now - rng.randrange(0, 1_800)
        if event == "login_failed" and user not in late_users and rng.random() < 0.02:
            late_users.add(user)
            ts = now - rng.randrange(600_000, 1_800_000)
        rows.append({"user": user, "event": event, "ip": f"10.0.0.{rng.randrange(256)}",
                     "ts": ts})
    return rows


def card_payments(rng: random.Random, cards: int = 40, n: int = 3000) -> list[dict[str, Any]]:
    """A payment every 200 ms: mostly ordinary amounts, now and then a card tested with 2-5
    tiny payments and then (or not) used for a large one; jitter within the 5 s bound; a few
    payments hours late (the late topic in every run)."""
    rows = []
    plan: dict[str, list[float]] = {}
    for i in range(n):
        now = T0 + i * 200
        card = f"c{rng.randrange(cards)}"
        if not plan.get(card) and rng.random() < 0.05:
            plan[card] = [rng.choice((0.5, 1.0, 1.5, 2.0)) for _ in range(rng.randrange(2, 6))]
            if rng.random() < 0.7:
                plan[card].append(rng.choice((250.0, 480.0, 900.0)))
        amount = plan[card].pop(0) if plan.get(card) else rng.choice((5.0, 12.5, 40.0, 150.0))
        ts = now - rng.randrange(0, 4_000)
        if i > 500 and rng.random() < 0.01:
            ts = now - rng.randrange(3_600_000, 7_200_000)
        status = "declined" if rng.random() < 0.03 else "approved"
        rows.append({"card": card, "amount": amount, "status": status,
                     "merchant": f"m{rng.randrange(12)}", "ts": ts})
    return rows


def orders_revenue(rng: random.Random, n: int = 3000) -> list[dict[str, Any]]:
    """Orders keyed by order id for 40 users, each mostly from a home country; some cancelled
    or zero (filtered out); timestamps slightly disordered (no window: never late)."""
    homes = {f"u{u}": rng.choice(["de", "fr", "it", "es"]) for u in range(40)}
    rows = []
    for i in range(n):
        user = f"u{rng.randrange(40)}"
        country = homes[user] if rng.random() < 0.9 else rng.choice(["us", "gb", "ch"])
        rows.append({"order_id": f"o{i}", "user": user, "country": country,
                     "amount": rng.randrange(0, 4000) / 4,
                     "status": rng.choices(["paid", "cancelled", "refunded"], [0.85, 0.1, 0.05])[0],
                     "ts": T0 + i * 1000 - rng.randrange(0, 3000)})
    return rows


def reconciliation_streams(rng: random.Random) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The example's generator (mismatches, unpaid orders, orphan and duplicate payments,
    disorder within 5 s), plus payments 25-40 min after their order: the order times out
    `incomplete` and the payment opens a group of its own, in every run."""
    sample = recon.generate(1500, seed=rng.randrange(1 << 30), start_ms=T0, mismatch_share=0.04,
                            missing_share=0.03, orphan_share=0.02, duplicate_share=0.01)
    orders = [v for _, v, _ in sample.orders]
    payments = [v for _, v, _ in sample.payments]
    by_id = {o["order_id"]: o for o in orders}
    # orders of the first 10 minutes: their timeout passes while both streams still run
    unpaid = sorted(o for o in sample.missing if by_id[o]["ts"] < T0 + 600_000)[:10]
    for j, oid in enumerate(unpaid):
        ts = by_id[oid]["ts"] + rng.randrange(25 * 60_000, 40 * 60_000)
        payments.append({"payment_id": f"late{j}", "order_id": oid,
                         "amount": by_id[oid]["amount"], "method": "card", "ts": ts})
    payments.sort(key=lambda p: p["ts"])
    return orders, payments


# --- the two runs --------------------------------------------------------------------------------

def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


def batch_outputs(yaml: Path, tmp: Path, inputs: dict[str, tuple[list[dict[str, Any]], str]],
                  outputs: list[str], partitions: int) -> dict[str, list[tuple[Any, Any]]]:
    """Run BatchRun over `inputs` (source -> (rows, key field)) as JSON lines; every topic in
    `outputs` written to a file (key in a column); the (key, value) records per topic."""
    paths = {name: str(write_jsonl(tmp / f"{name}.jsonl", rows))
             for name, (rows, _) in inputs.items()}
    loaded = with_files(load_spec(yaml), paths, keys={n: k for n, (_, k) in inputs.items()},
                        partitions={n: str(partitions) for n in inputs})
    files = {t: FileSinkSpec(path=str(tmp / f"{t}.out.jsonl"), key=KEY) for t in outputs}
    BatchRun(loaded, WorkerConfig(), files=files, state_dir=tmp / "state",
             chunk_rows=CHUNK_ROWS, commit_rows=500).run()
    out = {}
    for topic, spec in files.items():
        rows = [orjson.loads(line) for line in Path(spec.path).read_bytes().splitlines()]
        out[topic] = [(row.pop(KEY), row) for row in rows]
    return out


def streaming_outputs(yaml: Path, tmp: Path, inputs: dict[str, tuple[list[dict[str, Any]], str]],
                      outputs: list[str], partitions: int,
                      rng: random.Random) -> dict[str, list[tuple[Any, Any]]]:
    """The driver over the same rows: each source's rows in file order, sources alternating,
    in batches of 20-300 rows with `run()` between, then the end-of-input watermark."""
    cursors = dict.fromkeys(inputs, 0)
    with TopologyTestDriver(yaml, partitions=dict.fromkeys(inputs, partitions),
                            state_dir=tmp / "driver") as driver:
        while any(cursors[n] < len(rows) for n, (rows, _) in inputs.items()):
            for name, (rows, key) in inputs.items():
                start = cursors[name]
                end = cursors[name] = min(len(rows), start + rng.randrange(20, 300))
                for row in rows[start:end]:
                    driver.pipe(name, row[key], row, row["ts"])
            driver.run()
        for name in inputs:
            driver.pipe_watermark(name, END_OF_TIME)
        driver.run()
        return {t: [(r["key"], orjson.loads(orjson.dumps(r["value"]))) for r in driver.output(t)]
                for t in outputs}


def multiset(records: list[tuple[Any, Any]]) -> Counter[bytes]:
    return Counter(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in records)


def last_per_key(records: list[tuple[Any, Any]], drop: tuple[str, ...] = ()) -> dict[Any, Any]:
    out = {}
    for key, value in records:
        out[key] = {f: v for f, v in value.items() if f not in drop}
    return out


def both(yaml: str, tmp: Path, inputs: dict[str, tuple[list[dict[str, Any]], str]],
         outputs: list[str], partitions: int, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    path = TOPOLOGIES / yaml
    (tmp / "b").mkdir()
    (tmp / "s").mkdir()
    batch = batch_outputs(path, tmp / "b", inputs, outputs, partitions)
    stream = streaming_outputs(path, tmp / "s", inputs, outputs, partitions, random.Random(seed))
    return batch, stream


def assert_same(batch: dict[str, Any], stream: dict[str, Any]) -> None:
    for topic in stream:
        assert stream[topic], f"{topic}: the streaming run wrote nothing (the data tests nothing)"
        assert multiset(batch[topic]) == multiset(stream[topic]), topic


# --- the examples --------------------------------------------------------------------------------

PARTITIONS = [1, 4]


@pytest.mark.parametrize("partitions", PARTITIONS)
def test_gmv_dashboard(tmp_path: Path, partitions: int) -> None:
    rows = orders_gmv(random.Random(16))
    batch, stream = both("gmv_dashboard.yaml", tmp_path, {"orders": (rows, "order_id")},
                         ["gmv-per-second", "gmv-late-orders"], partitions, seed=1)
    assert_same(batch, stream)
    late = stream["gmv-late-orders"]
    assert 20 < len(late) < 100  # the far-late paid orders, and only those
    windows = {(v["country"], v["second"]) for _, v in stream["gmv-per-second"]}
    assert len(windows) > 300


@pytest.mark.parametrize("partitions", PARTITIONS)
def test_user_sessions(tmp_path: Path, partitions: int) -> None:
    rows = views(random.Random(16))
    batch, stream = both("user_sessions.yaml", tmp_path, {"views": (rows, "user")},
                         ["user-sessions"], partitions, seed=2)
    assert_same(batch, stream)
    sessions = stream["user-sessions"]
    assert any("/back" in v["pages"] for _, v in sessions)  # a late view merged two sessions
    kept = sum(v["views"] for _, v in sessions)
    assert 0 < len(rows) - kept < len(rows) // 10  # the hours-late views were dropped


@pytest.mark.parametrize("partitions", PARTITIONS)
def test_failed_logins(tmp_path: Path, partitions: int) -> None:
    rows = logins(random.Random(16))
    batch, stream = both("failed_logins.yaml", tmp_path, {"logins": (rows, "user")},
                         ["login-alerts"], partitions, seed=3)
    assert_same(batch, stream)
    assert len(stream["login-alerts"]) > 20


@pytest.mark.parametrize("partitions", PARTITIONS)
def test_failed_logins_pattern(tmp_path: Path, partitions: int) -> None:
    rows = logins(random.Random(16))
    batch, stream = both("failed_logins_pattern.yaml", tmp_path, {"logins": (rows, "user")},
                         ["login-alerts"], partitions, seed=3)
    assert_same(batch, stream)
    assert len(stream["login-alerts"]) > 20


@pytest.mark.parametrize("partitions", PARTITIONS)
def test_card_testing(tmp_path: Path, partitions: int) -> None:
    rows = card_payments(random.Random(16))
    batch, stream = both("card_testing.yaml", tmp_path, {"payments": (rows, "card")},
                         ["card-testing-alerts", "card-testing-watch-list", "card-payments-late"],
                         partitions, seed=6)
    assert_same(batch, stream)
    assert len(stream["card-testing-alerts"]) > 10


@pytest.mark.parametrize("partitions", PARTITIONS)
def test_revenue_per_user(tmp_path: Path, partitions: int) -> None:
    rows = orders_revenue(random.Random(16))
    batch, stream = both("revenue_per_user.yaml", tmp_path, {"orders": (rows, "order_id")},
                         ["revenue-per-user"], partitions, seed=4)
    drop = () if partitions == 1 else ("country",)
    b, s = (last_per_key(x["revenue-per-user"], drop) for x in (batch, stream))
    assert b == s
    assert len(s) == 40
    paid = [r for r in rows if r["amount"] > 0 and r["status"] != "cancelled"]
    assert sum(v["orders"] for v in s.values()) == len(paid)


@pytest.mark.parametrize("partitions", PARTITIONS)
def test_reconciliation(tmp_path: Path, partitions: int) -> None:
    orders, payments = reconciliation_streams(random.Random(16))
    batch, stream = both("reconciliation.yaml", tmp_path,
                         {"orders": (orders, "order_id"), "payments": (payments, "payment_id")},
                         ["reconciled", "discrepancies"], partitions, seed=5)
    assert_same(batch, stream)
    statuses = Counter(v["status"] for _, v in stream["discrepancies"])
    assert statuses["mismatched"] and statuses["incomplete"]
    late = {v["payments"]["payment_id"] for _, v in stream["discrepancies"]
            if v["status"] == "incomplete" and v["payments"]}
    assert {f"late{j}" for j in range(10)} <= late
    assert len(stream["reconciled"]) > 1000
