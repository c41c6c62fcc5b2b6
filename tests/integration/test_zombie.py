"""Zombie fencing: a worker frozen (SIGSTOP) past its session timeout while another worker takes
its partitions, then thawed (SIGCONT) with a transaction still open. Nothing it writes after
the group moved on may become visible: its offset commit carries a stale member epoch, so the
transaction aborts, and its tasks reopen from the new owner's commits."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from tests.integration.scenario import RevenueScenario

pytestmark = pytest.mark.integration

# a zombie's open transaction holds back read_committed readers (the new owner reading the
# repartition topic) until the broker aborts it: keep that wait short, as Kafka Streams does
FAST_TXN = {"PROCESSOR_PRODUCER": '{"transaction.timeout.ms": 10000}',
            "PROCESSOR_BATCH_SIZE": "200"}


def test_a_thawed_zombie_writes_nothing_visible_and_state_equals_oracle(broker, tmp_path, unique):
    broker.require_aborted_isolation("that a zombie's writes stay invisible")
    sc = RevenueScenario(broker.bootstrap, tmp_path, unique, "exactly_once")
    sc.produce(4_000, seed=1)
    zombie = sc.worker(state="z", worker_id=f"zombie-{unique}", idle="4s", env=FAST_TXN)
    zombie.wait_for_log("task running", count=4)
    feeder = threading.Thread(target=sc.produce, args=(16_000,), kwargs={"seed": 2, "rate": 2_000})
    feeder.start()
    time.sleep(1.5)  # mid-stream: the zombie has a transaction open with outputs in it
    zombie.proc.send_signal(signal.SIGSTOP)
    stopped_at = len(zombie.logs())
    try:
        heir = sc.worker(state="h", worker_id=f"heir-{unique}", idle="6s", env=FAST_TXN)
        # the heir owns every task only once the zombie's session (6 s on the test broker)
        # has expired, and runs them once the zombie's transaction was aborted
        heir.wait_for_log("task running", count=4, timeout=90)
        time.sleep(3)
    finally:
        zombie.proc.send_signal(signal.SIGCONT)
    feeder.join()
    assert heir.wait(180) == 0, heir.log_text()
    assert zombie.wait(180) == 0, zombie.log_text()

    after = zombie.logs()[stopped_at:]
    noticed = [r["msg"] for r in after if r.get("msg") in (
        "partitions lost; closing tasks dirty", "checkpoint failed; closing tasks dirty and "
        "reopening them", "partitions revoked")]
    assert noticed, f"the thawed zombie never noticed it lost its partitions:\n{zombie.log_text()}"
    sc.assert_final_state_matches_oracle()
    sc.assert_no_repeated_outputs()
