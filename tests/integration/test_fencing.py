"""A producer that takes over the worker's transactional id fences it; the worker must close
its tasks dirty, build a new producer, rejoin, and still end with state equal to the oracle."""

from __future__ import annotations

import threading

import pytest
from confluent_kafka import Producer

from tests.integration.scenario import RevenueScenario

pytestmark = pytest.mark.integration


def test_fenced_worker_recovers_and_state_equals_oracle(broker, tmp_path, unique):
    sc = RevenueScenario(broker.bootstrap, tmp_path, unique, "exactly_once")
    sc.produce(4_000, seed=1)
    worker_id = f"fence-{unique}"
    w = sc.worker(worker_id=worker_id, idle="5s", env={"PROCESSOR_BATCH_SIZE": "200"})
    w.wait_for_log("task running", count=4)
    feeder = threading.Thread(target=sc.produce, args=(12_000,), kwargs={"seed": 2, "rate": 3_000})
    feeder.start()
    threading.Event().wait(1.5)
    zombie_killer = Producer({"bootstrap.servers": broker.bootstrap,
                              "transactional.id": f"{sc.name}-{worker_id}"})
    zombie_killer.init_transactions(30)  # bumps the epoch: the worker's producer is now fenced
    feeder.join()
    assert w.wait(180) == 0, w.log_text()
    failures = [r for r in w.logs()
                if r.get("msg") == "checkpoint failed; closing tasks dirty and reopening them"]
    assert failures, f"the worker never noticed it was fenced:\n{w.log_text()}"
    # librdkafka reports the fence as fatal or as a produce in an erroneous state, depending
    # on timing; either way the worker must have replaced its producer
    assert sum(1 for r in w.logs() if r.get("msg") == "transactional producer ready") >= 2
    sc.assert_final_state_matches_oracle()
