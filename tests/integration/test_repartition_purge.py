"""Repartition records are deleted once their consumption is committed (DeleteRecords, as Kafka
Streams does), so repartition topics do not grow without bound — and nothing needed them:
results still equal the oracle, also after kill -9 right after a purge and a restart on a
fresh state dir (restore from the changelog, resume above the purged prefix)."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from tests.integration.scenario import RevenueScenario

pytestmark = pytest.mark.integration

PURGE_OFTEN = {"PROCESSOR_REPARTITION_PURGE_INTERVAL_MS": "200ms"}
UNSUPPORTED = ("repartition topics cannot be purged on this broker; not trying again "
               "(they keep every record: they are created without time retention)")


def offsets(bootstrap: str, group: str, topic: str) -> dict[int, tuple[int, int, int]]:
    """Per partition: (low watermark, high watermark, the group's committed offset)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                  "client.id": f"purge-check-{uuid.uuid4().hex[:6]}",
                  "enable.auto.commit": False, "isolation.level": "read_committed"})
    try:
        parts = sorted(c.list_topics(topic, timeout=10).topics[topic].partitions)
        committed = {tp.partition: tp.offset
                     for tp in c.committed([TopicPartition(topic, p) for p in parts], timeout=10)}
        out = {}
        for p in parts:
            low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            out[p] = (low, high, committed[p])
        return out
    finally:
        c.close()


def repartition_topic(sc: RevenueScenario) -> str:
    return f"{sc.name}-totals-repartition"


def scenario(broker, tmp_path, unique: str, guarantee: str) -> RevenueScenario:
    return RevenueScenario(broker.bootstrap, tmp_path, unique, guarantee)


def retention_ms(bootstrap: str, topic: str) -> str:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    return admin.describe_configs([resource])[resource].result()["retention.ms"].value


def assert_purged_to_committed(broker, sc: RevenueScenario) -> None:
    marks = offsets(broker.bootstrap, sc.name, repartition_topic(sc))
    print(f"\n{repartition_topic(sc)} (low, high, committed) per partition: {marks}")
    assert all(committed > 0 for _, _, committed in marks.values()), marks
    # the last purge went out while the worker idled before its bounded run ended
    assert all(low == committed for low, _, committed in marks.values()), marks


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_committed_repartition_records_are_purged(broker, tmp_path, unique, guarantee):
    sc = scenario(broker, tmp_path, unique, guarantee)
    sc.produce(12_000)
    worker = sc.worker(env={**PURGE_OFTEN, "PROCESSOR_BATCH_SIZE": "1000"})
    assert worker.wait(180) == 0, worker.log_text()
    sc.assert_final_state_matches_oracle()
    warnings = [r for r in worker.logs() if r.get("msg") == UNSUPPORTED]
    if broker.kind == "embedded-tansu":  # drops the connection on DeleteRecords: said once
        assert len(warnings) == 1, worker.log_text()
        return
    assert not warnings, worker.log_text()
    assert_purged_to_committed(broker, sc)
    # records carry 2023 event times: only purging may delete them, never time retention
    assert retention_ms(broker.bootstrap, repartition_topic(sc)) == "-1"


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_kill_after_purge_then_restart_on_a_fresh_state_dir(broker, tmp_path, unique, guarantee):
    if broker.kind == "embedded-tansu":
        pytest.skip("Tansu cannot delete records (see test_committed_repartition_records_are_purged)")
    sc = scenario(broker, tmp_path, unique, guarantee)
    small = {**PURGE_OFTEN, "PROCESSOR_BATCH_SIZE": "300"}
    # kill -9 right after the third purge completed, while the input is still arriving ...
    crashed = sc.worker(state="a", idle="5s", commit_interval="20ms",
                        env={**small, "PROCESSOR_CRASH_AT": "repartition.purged:3"})
    sc.produce(20_000, rate=4_000)
    assert crashed.wait(120) == -9, crashed.log_text()
    after_crash = offsets(broker.bootstrap, sc.name, repartition_topic(sc))
    print(f"\nafter kill -9 after a purge: (low, high, committed) {after_crash}")
    assert any(low > 0 for low, _, _ in after_crash.values()), "no purge before the kill"
    source = offsets(broker.bootstrap, sc.name, sc.input)
    assert sum(max(c, 0) for _, _, c in source.values()) < 20_000, "should die mid-stream"
    # ... then again between the changelog write and the commit (at-least-once: the changelog
    # position is ahead of the committed offset; exactly-once: the transaction aborts) ...
    again = sc.worker(state="a", idle="5s", commit_interval="20ms",
                      env={**small, "PROCESSOR_CRASH_AT": "checkpoint.after_changelog:4"})
    assert again.wait(120) == -9, again.log_text()
    # ... and finish on another machine: the store restores from the changelog, the task
    # resumes at max(committed offset, changelog position), both above the purged prefix
    done = sc.worker(state="b", env=PURGE_OFTEN)
    assert done.wait(180) == 0, done.log_text()
    assert not [r for r in done.logs() if r.get("level") in ("WARNING", "ERROR")
                and "purge" in str(r.get("msg"))], done.log_text()
    sc.assert_final_state_matches_oracle()
    assert_purged_to_committed(broker, sc)
