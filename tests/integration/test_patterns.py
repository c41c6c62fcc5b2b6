"""The `pattern` step on the real broker: the card-testing example (topologies/card_testing.yaml)
over generated payments for 200 cards on 4 partitions, exactly-once: a worker killed -9 mid-run
and finished by another (same state dir, or a new one restoring from the changelog), a second
worker joining mid-stream, two workers over a bounded range. Each time the alerts and the watch
list (the timeouts) read read_committed must be exactly what an oracle written here from the
payments computes: nothing fired twice, nothing missing.

The oracle is this one pattern by the semantics in processor/operators/patterns/__init__.py,
per card over its approved payments in time order (every timestamp is distinct): tiny means
amount <= 2, large amount >= 200.
- A large payment at index i completes, for a tiny start a at or past the skip point q, the
  candidate whose tests are every tiny payment in [a, i) (inner followed_by takes each next
  tiny one, greedy lets none go before the large one): a match when there are at least 3 of
  them, no large payment between the last of them and i (it would have been the match's own),
  and ts(i) < ts(a) + 30 min. The smallest such a is emitted; q becomes i + 1 (past the last
  event), which discards the others.
- Every tiny payment a starts a partial match: the tiny payments from a with ts < ts(a) +
  30 min. Growing it by another tiny payment is never blocked (every tiny payment before the
  expiry is in it already), so it times out at ts(a) + 30 min exactly when a is at or past the
  skip point as it stands after the payments before that time. A partial that became a match
  is always behind q, so it never times out.
The data mixes bursts of tiny payments (1 to 6, with ordinary and declined payments between)
ended by a large payment soon, by one near the 30-minute edge or by nothing, with ordinary
spending, and episodes close enough that a large payment may complete an earlier burst: the
oracle covers those cases rather than data shaped to avoid them.

The end of input, two ways. The kill and join tests produce one ordinary approved payment per
partition an hour past the last payment (a far-future record, as the event-time tests do): it
moves every partition's watermark past every expiry, so every partial match times out before
the workers go idle (`--stop-when-idle`), and it is no part of any match (neither tiny nor
large). The bounded-range test produces none: `--end payments=latest` sends every partition's
watermark to +infinity at the end of its range, which closes everything the same way.
"""

from __future__ import annotations

import os
import random
import threading
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from processor.tools import worker_process
from processor.tools.generator import create_topic, produce_json
from tests.integration.kafka import WorkerProcess, read_all, topology_file

pytestmark = pytest.mark.integration

PARTITIONS = 4
CARDS = 200
T0 = 1_700_000_000_000
MINUTE = 60_000
WITHIN = 30 * MINUTE
HOUR = 60 * MINUTE
SMALL_BATCHES = {"PROCESSOR_BATCH_SIZE": "200"}

Payment = tuple[str, dict[str, Any]]


def _tiny(p: dict[str, Any]) -> bool:
    return p["amount"] <= 2


def _large(p: dict[str, Any]) -> bool:
    return p["amount"] >= 200


def generate_payments(cards: int = CARDS, seed: int = 17) -> list[Payment]:
    """Payments of `cards` cards over about 5 hours, in time order, every timestamp distinct."""
    rng = random.Random(seed)
    events: list[tuple[int, str, dict[str, Any]]] = []

    def pay(card: str, t: int, amount: float, status: str = "approved") -> None:
        events.append((t, card, {"card": card, "status": status, "amount": amount,
                                 "merchant": f"m{rng.randrange(12)}"}))

    def ordinary() -> float:
        return rng.choice([2.01, 199.99, round(rng.uniform(2.01, 199.99), 2)])

    for c in range(cards):
        card = f"card-{c:03d}"
        t = T0 + rng.randrange(HOUR)
        while t < T0 + 4 * HOUR:
            if rng.random() < 0.4:  # ordinary spending, now and then a large payment
                for _ in range(rng.randint(1, 4)):
                    pay(card, t, round(rng.uniform(200, 900), 2) if rng.random() < 0.2
                        else ordinary(), "declined" if rng.random() < 0.1 else "approved")
                    t += rng.randrange(MINUTE, 10 * MINUTE)
            else:  # card testing: tiny payments, then maybe a large one
                first = t
                for _ in range(rng.randint(1, 6)):
                    pay(card, t, rng.choice([2.0, round(rng.uniform(0.1, 2.0), 2)]))
                    if rng.random() < 0.2:
                        pay(card, t + 3_000, ordinary())
                    if rng.random() < 0.1:
                        pay(card, t + 5_000, rng.choice([1.0, 500.0]), "declined")
                    t += rng.randrange(10_000, 90_000)
                end = rng.random()
                if end < 0.5:  # soon
                    t += rng.randrange(MINUTE, 15 * MINUTE)
                    pay(card, t, rng.choice([200.0, round(rng.uniform(200, 3000), 2)]))
                elif end < 0.7:  # around the 30-minute edge of the first tiny payment
                    t = first + WITHIN + rng.randrange(-4 * MINUTE, 4 * MINUTE)
                    pay(card, t, round(rng.uniform(200, 3000), 2))
            t += rng.randrange(5 * MINUTE, 80 * MINUTE)
    events.sort(key=lambda e: e[0])
    out: list[Payment] = []
    last = 0
    for t, card, value in events:
        last = max(t, last + 1)  # distinct timestamps: (ts, arrival) order is ts order
        value["ts"] = last
        out.append((card, value))
    return out


def flush_payments(payments: list[Payment]) -> list[tuple[str, dict[str, Any], int]]:
    """One ordinary payment per partition an hour past the last: the watermark passes every
    expiry."""
    end = max(v["ts"] for _, v in payments) + HOUR
    return [(f"flush-{p}", {"card": f"flush-{p}", "status": "approved", "amount": 50.0,
                            "merchant": "flush", "ts": end + p}, p) for p in range(PARTITIONS)]


def card_testing_oracle(payments: list[Payment]) -> tuple[list[Payment], list[Payment]]:
    """(alerts, timeouts) as (key, value), by the rules in the module docstring."""
    by_card: dict[str, list[dict[str, Any]]] = {}
    for card, v in payments:
        if v["status"] == "approved":
            by_card.setdefault(card, []).append(v)
    alerts: list[Payment] = []
    timeouts: list[Payment] = []
    for card, evs in by_card.items():
        evs.sort(key=lambda v: v["ts"])
        q = 0
        raised: list[tuple[int, int]] = []  # (ts of the match's last event, q after it)
        for i, e in enumerate(evs):
            if not _large(e):
                continue
            for a in range(q, i):
                if not _tiny(evs[a]):
                    continue
                tests = [evs[j] for j in range(a, i) if _tiny(evs[j])]
                last = max(j for j in range(a, i) if _tiny(evs[j]))
                if (len(tests) >= 3 and not any(_large(evs[j]) for j in range(last + 1, i))
                        and e["ts"] < tests[0]["ts"] + WITHIN):
                    alerts.append((card, {
                        "card": card, "tests": len(tests),
                        "tested_total": round(sum(t["amount"] for t in tests), 2),
                        "merchants": sorted({t["merchant"] for t in tests}),
                        "large_amount": e["amount"], "large_merchant": e["merchant"],
                        "first_test_ts": tests[0]["ts"], "large_ts": e["ts"]}))
                    q = i + 1
                    raised.append((e["ts"], q))
                    break
        for a, e in enumerate(evs):
            if not _tiny(e):
                continue
            expiry = e["ts"] + WITHIN
            if a < max((q_after for ts, q_after in raised if ts < expiry), default=0):
                continue
            taken = [v for v in evs[a:] if _tiny(v) and v["ts"] < expiry]
            timeouts.append((card, {"start": e["ts"], "end": taken[-1]["ts"],
                                    "expired_at": expiry,
                                    "stages": {"tests": taken, "large": []}}))
    return alerts, timeouts


class CardTesting:
    """The card-testing example with its topics renamed for one test."""

    def __init__(self, bootstrap: str, tmp: Path, unique: str) -> None:
        self.bootstrap, self.tmp = bootstrap, tmp
        self.input, self.alerts = f"payments-{unique}", f"alerts-{unique}"
        self.watch, self.late = f"watch-{unique}", f"late-{unique}"
        self.topology = topology_file(tmp, "card_testing.yaml", f"cards-{unique}", {
            "name: card-testing": f"name: cards-{unique}",
            "topic: card-payments-late": f"topic: {self.late}",
            "topic: card-payments": f"topic: {self.input}",
            "topic: card-testing-alerts": f"topic: {self.alerts}",
            "topic: card-testing-watch-list": f"topic: {self.watch}",
        })
        create_topic(bootstrap, self.input, PARTITIONS)
        for topic in (self.alerts, self.watch, self.late):  # the example names no partitions
            create_topic(bootstrap, topic, 2)
        self.payments = generate_payments()

    def produce(self, *, flush: bool) -> None:
        produce_json(self.bootstrap, self.input, self.payments)
        if flush:
            produce_json(self.bootstrap, self.input, flush_payments(self.payments))

    def read(self, topic: str) -> Counter:
        """The topic's records (read_committed) as a multiset of (key, canonical JSON value)."""
        return Counter((k.decode(), orjson.dumps(orjson.loads(v), option=orjson.OPT_SORT_KEYS))
                       for k, v, _ in read_all(self.bootstrap, topic))

    def assert_equals_oracle(self) -> None:
        want_alerts, want_timeouts = card_testing_oracle(self.payments)
        assert len(want_alerts) > 50 and len(want_timeouts) > 200, "the data should exercise both"
        for topic, want in ((self.alerts, want_alerts), (self.watch, want_timeouts)):
            expected = Counter((k, orjson.dumps(v, option=orjson.OPT_SORT_KEYS))
                               for k, v in want)
            got = self.read(topic)
            twice = {k: n for k, n in got.items() if n > 1}
            assert not twice, f"{topic}: {len(twice)} outputs fired more than once: {list(twice)[:2]}"
            missing, extra = expected - got, got - expected
            assert not (missing or extra), (
                f"{topic}: {sum(expected.values())} expected; {sum(missing.values())} missing, "
                f"e.g. {list(missing)[:2]}; {sum(extra.values())} unexpected, e.g. {list(extra)[:2]}")
        assert read_all(self.bootstrap, self.late) == [], "no payment is late in this input"


@pytest.mark.parametrize(("point", "machine"), [
    ("checkpoint.after_changelog:5", "same"),  # changelog written, nothing committed; local dir kept
    ("batch.processed:12", "new"),             # between checkpoints; state restored from the changelog
])
def test_kill_mid_run_then_restart_alerts_and_watch_list_equal_oracle_once(
        broker, tmp_path, unique, point, machine):
    broker.require_aborted_isolation("that no alert or timeout fires twice after kill -9")
    sc = CardTesting(broker.bootstrap, tmp_path, unique)
    sc.produce(flush=True)
    # the worker id is kept on the new machine too (a StatefulSet pod rescheduled with an empty
    # volume): the restart fences the killed worker and aborts its open transaction at once.
    # Under another id the broker aborts it only at the transaction timeout (60 s), and until
    # then read_committed readers stop in front of it (README, "Transactional id").
    worker_id = f"cards-{unique}"
    crashed = WorkerProcess(sc.topology, broker.bootstrap, tmp_path / "state", tmp_path,
                            worker_id=worker_id, idle="5s", commit_interval="20ms",
                            env={**SMALL_BATCHES, "PROCESSOR_CRASH_AT": point})
    assert crashed.wait(120) == -9, f"not killed at {point}:\n{crashed.log_text()}"
    state = tmp_path / ("state" if machine == "same" else "state-new")
    done = WorkerProcess(sc.topology, broker.bootstrap, state, tmp_path, worker_id=worker_id,
                         idle="5s", env=SMALL_BATCHES)
    assert done.wait(180) == 0, done.log_text()
    finished = sum(r["records"] for r in done.logs() if r.get("msg") == "worker stopped")
    assert 0 < finished < len(sc.payments), "the kill should come after some input, before all"
    if machine == "new":
        restored = sum(r["records"] for r in done.logs() if r.get("msg") == "store restored")
        assert restored > 0, "a new machine restores the partial matches from the changelog"
    sc.assert_equals_oracle()


def test_second_worker_joins_mid_stream_alerts_and_watch_list_equal_oracle_once(
        broker, tmp_path, unique):
    """A worker runs the first half; the second half arrives while a second worker joins and
    takes partitions over, restoring their partial matches and buffered payments from the
    changelog."""
    broker.require_aborted_isolation("that no alert or timeout fires twice across a rebalance")
    sc = CardTesting(broker.bootstrap, tmp_path, unique)
    half = len(sc.payments) // 2
    produce_json(broker.bootstrap, sc.input, sc.payments[:half])
    first = WorkerProcess(sc.topology, broker.bootstrap, tmp_path / "state-1", tmp_path,
                          worker_id=f"w1-{unique}", idle="5s", env=SMALL_BATCHES)
    first.wait_for_log("task running", count=PARTITIONS)

    def rest() -> None:
        produce_json(broker.bootstrap, sc.input, sc.payments[half:], rate_per_s=400)
        produce_json(broker.bootstrap, sc.input, flush_payments(sc.payments))

    feeder = threading.Thread(target=rest)
    feeder.start()
    second = WorkerProcess(sc.topology, broker.bootstrap, tmp_path / "state-2", tmp_path,
                           worker_id=f"w2-{unique}", idle="5s", env=SMALL_BATCHES)
    second.wait_for_log("task running", count=1, timeout=60)
    feeder.join()
    assert second.wait(180) == 0, second.log_text()
    assert first.wait(180) == 0, first.log_text()
    assert any(r.get("msg") == "partitions revoked" and r["kept"] > 0 for r in first.logs()), \
        "the second worker joined without the first giving a partition up"
    restored = sum(r["records"] for r in second.logs() if r.get("msg") == "store restored")
    assert restored > 0, "the joining worker restored no pattern state from the changelog"
    sc.assert_equals_oracle()


def test_two_workers_over_a_bounded_range_equal_oracle_once(broker, tmp_path, unique):
    """Two workers sharing the partitions of a range of the topic (`--end payments=latest`). No
    far-future record: at the end of the range the watermark goes to +infinity, so every
    partial match times out there, and each worker exits by itself."""
    broker.require_aborted_isolation("that no alert or timeout fires twice across a rebalance")
    sc = CardTesting(broker.bootstrap, tmp_path, unique)
    sc.produce(flush=False)
    workers = []
    for name in ("a", "b"):
        cmd = [*worker_process.worker_command(sc.topology, broker.bootstrap,
                                              tmp_path / f"state-{name}",
                                              guarantee="exactly_once", commit_interval="50ms",
                                              worker_id=f"{name}-{unique}"),
               "--end", "payments=latest"]
        w = worker_process.WorkerProcess(
            cmd, tmp_path / f"worker-{name}-{uuid.uuid4().hex[:6]}.log",
            {**os.environ, **SMALL_BATCHES, "PROCESSOR_MAX_POLL_INTERVAL_MS": "6000",
             "PROCESSOR_SESSION_TIMEOUT_MS": "6000"})
        WorkerProcess.started.append(w)  # type: ignore[arg-type]  # reaped after the test
        workers.append(w)
    for w in workers:
        assert w.wait(180) == 0, w.log_text()
        assert w.find("bounded run finished"), w.log_text()
    sc.assert_equals_oracle()
