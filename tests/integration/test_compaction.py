"""On Apache Kafka changelogs compact: a restore after compaction reads about one record per
live key (plus the position records), not the history of updates — and restores the state the
oracle says.

Compaction is made to happen in test time with the worker setting a user would use,
`changelog_topic_configs` (segment.ms 1 s, min.cleanable.dirty.ratio 0.01, over the defaults'
min.compaction.lag.ms 0); the suite's broker runs its cleaner every 0.5 s. The cleaner never
touches the active segment, so after the run one more record rolls every changelog partition.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from processor.examples.revenue import revenue_oracle
from processor.tools.generator import produce_json
from tests.integration.kafka import read_all
from tests.integration.scenario import RevenueScenario

pytestmark = pytest.mark.integration

USERS = 300
PARTITIONS = 4
SEGMENT_MS = 1000
COMPACT_SOON = {"PROCESSOR_CHANGELOG_TOPIC_CONFIGS": orjson.dumps(
    {"segment.ms": SEGMENT_MS, "min.cleanable.dirty.ratio": "0.01"}).decode()}
LATER = 1_700_000_000_000 + 10**8  # after every sample order's event time


def end_offsets(bootstrap: str, topic: str) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "compaction-check"})
    try:
        return sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                   for p in range(PARTITIONS))
    finally:
        c.close()


def order(user: str, ts: int) -> dict[str, Any]:
    return {"user": user, "amount": 10.0, "status": "paid", "country": "de", "ts": ts}


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_restore_after_compaction_reads_one_record_per_live_key(broker, tmp_path, unique,
                                                                 guarantee):
    if broker.kind == "embedded-tansu":
        pytest.skip("Tansu never compacts (README: the embedded broker and what it cannot show)")
    sc = RevenueScenario(broker.bootstrap, tmp_path, unique, guarantee)
    # the outputs carry 2023 event times: keep them past the broker's 7-day retention
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(sc.output, PARTITIONS, -1, config={"retention.ms": "-1"})])[
        sc.output].result()
    changelog = f"{sc.name}-totals-changelog"

    # many checkpoints, each updating the keys it saw: a long history per key
    first = sc.worker(state="a", idle="5s", commit_interval="50ms", env=COMPACT_SOON)
    sc.produce(12_000, users=USERS, rate=2_000)
    time.sleep(SEGMENT_MS / 1000 + 0.5)
    # one later record moves the watermark, so every aggregate task appends a position record:
    # each changelog partition rolls its segment, and all the history becomes cleanable
    roll = [("roll-0", order("u0", LATER))]
    produce_json(sc.bootstrap, sc.input, roll)
    sc.produced.extend(roll)
    assert first.wait(120) == 0, first.log_text()
    history = end_offsets(broker.bootstrap, changelog)
    live = len(revenue_oracle(sc.produced))
    bound = 2 * live + 10 * PARTITIONS

    deadline = time.monotonic() + 120
    while True:
        left = len(read_all(broker.bootstrap, changelog))
        if left <= live + 4 * PARTITIONS or time.monotonic() > deadline:
            break
        time.sleep(1)
    print(f"\n{guarantee}: changelog offsets written {history}, records after compaction {left}, "
          f"live keys {live}")
    assert left <= bound, f"not compacted within 120 s: {left} records, {history} written"

    # another machine restores, then every user orders once more: each output is the
    # restored state plus that order, so all of the restored state is checked
    touch = [(f"touch-{i}", order(f"u{i}", LATER + 1 + i)) for i in range(USERS)]
    produce_json(sc.bootstrap, sc.input, touch)
    sc.produced.extend(touch)
    second = sc.worker(state="b")
    assert second.wait(180) == 0, second.log_text()
    restored = sum(r["records"] for r in second.logs() if r.get("msg") == "store restored")
    print(f"{guarantee}: restored {restored} records into a fresh state dir")
    assert 0 < restored <= bound, (restored, live, history)
    assert restored * 5 < history, (restored, history)
    sc.assert_final_state_matches_oracle()
