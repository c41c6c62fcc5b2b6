"""The worker's HTTP port on real worker processes: readiness during restore, liveness when
the loop is stuck, queryable state across two workers, and SIGTERM under load."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import orjson
import pytest

from processor.examples.revenue import revenue_oracle
from processor.tools.broker import free_port
from tests.integration.kafka import assert_revenue_matches, latest_json_by_key
from tests.integration.scenario import RevenueScenario

pytestmark = pytest.mark.integration


def get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


def http_env(port: int, **extra: str) -> dict[str, str]:
    return {"PROCESSOR_METRICS_PORT": str(port),
            "PROCESSOR_ADVERTISED_URL": f"http://127.0.0.1:{port}", **extra}


def poll(port: int, path: str, until: Any, timeout: float = 60) -> list[tuple[int, dict[str, Any]]]:
    """Every answer of `path` until `until(answer)` holds (the last one included)."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            answer = get(port, path)
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.05)
            continue
        seen.append(answer)
        if until(answer):
            return seen
        time.sleep(0.05)
    raise AssertionError(f"{path} never satisfied the condition; last answers {seen[-3:]}")


def test_readiness_during_restore_and_liveness_when_the_loop_is_stuck(broker, tmp_path, unique):
    sc = RevenueScenario(broker.bootstrap, tmp_path, unique)
    sc.produce(5_000)
    first = sc.worker("a")
    assert first.wait() == 0, first.log_text()

    # a fresh state directory restores from the changelog; the first restore chunk stalls 3 s,
    # and later the loop stalls 4 s after a batch: longer than the 1 s liveness timeout
    port = free_port()
    w = sc.worker("b", idle=None, env=http_env(
        port, PROCESSOR_STALL_AT="restore.chunk:1:3", PROCESSOR_LIVENESS_TIMEOUT_MS="1000"))
    during = poll(port, "/readyz", lambda a: a[0] == 200)
    restoring = [body for status, body in during if status == 503 and body["restoring"]]
    assert restoring, f"never seen not-ready during the restore: {during[:3]}"
    assert restoring[0]["reason"].startswith("restoring")
    assert during[-1][1]["reason"] == "processing"
    w.terminate()

    stuck_port = free_port()
    sc.produce(2_000, seed=2)
    s = sc.worker("b", idle=None, env=http_env(
        stuck_port, PROCESSOR_STALL_AT="batch.processed:1:4", PROCESSOR_LIVENESS_TIMEOUT_MS="1000"))
    answers = poll(stuck_port, "/healthz", lambda a: a[0] == 503)
    assert answers[-1][1]["status"] == "stuck" and answers[-1][1]["seconds_since_loop"] >= 1
    assert any(a[0] == 200 for a in answers), "alive before it got stuck"
    poll(stuck_port, "/healthz", lambda a: a[0] == 200)  # and alive again once the loop turns
    assert s.terminate() == 0, s.log_text()


def test_queryable_state_answers_from_either_worker(broker, tmp_path, unique):
    sc = RevenueScenario(broker.bootstrap, tmp_path, unique)
    sc.produce(6_000, users=40)
    ports = [free_port(), free_port()]
    workers = [sc.worker(name, idle=None, worker_id=f"w{name}", env=http_env(port))
               for name, port in zip("ab", ports, strict=True)]
    oracle = revenue_oracle(sc.produced)
    # both workers hold tasks, the input is processed, the directory knows them both
    for port in ports:
        poll(port, "/readyz", lambda a: a[0] == 200 and a[1]["tasks"] > 0)

    def answers_everywhere() -> bool:
        for port in ports:
            for user in oracle:
                status, body = get(port, f"/state/totals/{urllib.parse.quote(user)}")
                if status != 200 or body["value"]["orders"] != oracle[user]["orders"]:
                    return False
        return True

    deadline = time.monotonic() + 60
    while not answers_everywhere():
        assert time.monotonic() < deadline, "state never matched the oracle through both workers"
        time.sleep(0.5)
    served: dict[str, set[str]] = {"local": set(), "proxied": set()}
    for port, me in zip(ports, ["wa", "wb"], strict=True):
        for user in oracle:
            status, body = get(port, f"/state/totals/{urllib.parse.quote(user)}")
            assert status == 200
            assert abs(body["value"]["revenue"] - oracle[user]["revenue"]) < 0.011
            assert body["key"] == user and body["store"] == "totals"
            served["proxied" if body.get("via") == me else "local"].add(body["worker"])
            assert (body.get("via") == me) == (body["worker"] != me)
    assert served["local"] == {"wa", "wb"} and served["proxied"] == {"wa", "wb"}, served
    assert get(ports[0], "/state/totals/nobody")[0] == 404
    assert get(ports[0], "/state/nosuchstore/x")[0] == 404
    for w in workers:
        assert w.terminate() == 0, w.log_text()


def test_sigterm_under_load_commits_and_loses_nothing(broker, tmp_path, unique):
    sc = RevenueScenario(broker.bootstrap, tmp_path, unique)
    w = sc.worker("a", idle=None)
    w.wait_for_log("task running", count=1)
    producer = threading.Thread(target=sc.produce, args=(30_000,), kwargs={"rate": 5_000})
    producer.start()
    time.sleep(3)  # mid-stream: records arriving and being processed
    started = time.monotonic()
    assert w.terminate(timeout=60) == 0, w.log_text()
    took = time.monotonic() - started
    producer.join()
    stopped = next(r for r in w.logs() if r.get("msg") == "worker stopped")
    assert 0 < stopped["records"] < 30_000, "the SIGTERM came under load, not after it"
    assert took < 30, f"shutdown took {took:.1f} s"
    # nothing lost: a restart from the same state continues where the final checkpoint left off
    again = sc.worker("a")
    assert again.wait() == 0, again.log_text()
    assert_revenue_matches(latest_json_by_key(sc.outputs()), revenue_oracle(sc.produced))
    restored = [r for r in again.logs() if r.get("msg") == "store restored"]
    assert all(r["records"] == 0 for r in restored), "the final checkpoint reached RocksDB"
