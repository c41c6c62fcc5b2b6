"""Test-side Kafka helpers: the broker under test, worker processes, reading topics back."""

from __future__ import annotations

import os
import shutil
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, IsolationLevel, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec
from prometheus_client.parser import text_string_to_metric_families

from processor.tools import worker_process

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class BrokerUnderTest:
    bootstrap: str
    kind: str  # "apache-kafka" | "embedded-tansu" | "testcontainers-kafka" | "external"
    isolates_aborted: bool
    server: Any = None  # the ApacheKafkaBroker the suite started (kill/restart), else None

    def require_aborted_isolation(self, what: str) -> None:
        """Skip a check of exactly-once *output* on a broker that shows aborted records, with
        the reason. Never on the reference broker: the session fixture fails there instead."""
        if not self.isolates_aborted:
            pytest.skip(f"broker {self.kind} shows records of aborted transactions to "
                        f"read_committed consumers (probed at session start), so it cannot show "
                        f"{what}. Run on Apache Kafka (PROCESSOR_TEST_KAFKA=apache, the default).")


def probe_aborted_isolation(bootstrap: str) -> bool:
    """Does a read_committed consumer hide records of an aborted transaction?"""
    topic = f"probe-isolation-{uuid.uuid4().hex[:8]}"
    from processor.tools.generator import create_topic

    create_topic(bootstrap, topic, 1)
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"probe-{uuid.uuid4().hex}"})
    p.init_transactions(30)
    p.begin_transaction()
    p.produce(topic, b"aborted")
    p.flush(30)
    p.abort_transaction(30)
    p.begin_transaction()
    p.produce(topic, b"committed")
    p.commit_transaction(30)
    values = [v for _, v, _ in read_all(bootstrap, topic, committed=True)]
    assert b"committed" in values, f"probe could not read its committed record: {values}"
    return b"aborted" not in values


def read_all(bootstrap: str, topic: str, *, committed: bool = True,
             timeout: float = 30.0) -> list[tuple[bytes | None, bytes | None, int]]:
    """Every record of every partition up to the end: (key, value, partition)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex}",
                  "enable.partition.eof": True, "enable.auto.commit": False,
                  "isolation.level": "read_committed" if committed else "read_uncommitted"})
    md = c.list_topics(topic, timeout=10)
    parts = list(md.topics[topic].partitions)
    c.assign([TopicPartition(topic, p, 0) for p in parts])
    out: list[tuple[bytes | None, bytes | None, int]] = []
    eof: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(eof) < len(parts):
        if time.monotonic() > deadline:
            raise TimeoutError(f"reading {topic}: EOF on {sorted(eof)} of {parts}")
        for m in c.consume(5000, 0.5):
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    eof.add(m.partition())
                    continue
                raise RuntimeError(m.error().str())
            eof.discard(m.partition())
            out.append((m.key(), m.value(), m.partition()))
    c.close()
    return out


def wait_until_stable(bootstrap: str, topic: str, *, timeout: float = 90.0) -> None:
    """Until no open transaction holds back read_committed readers of `topic` (its last stable
    offset is its end on every partition): a killed worker's transaction that its successor
    cannot fence (another transactional id) ends only when the broker aborts it at its
    transaction timeout, and `read_all` stops in front of it."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    parts = list(admin.list_topics(topic, timeout=10).topics[topic].partitions)

    def ends(level: IsolationLevel) -> dict[int, int]:
        futures = admin.list_offsets({TopicPartition(topic, p): OffsetSpec.latest() for p in parts},
                                     isolation_level=level, request_timeout=10)
        return {tp.partition: f.result().offset for tp, f in futures.items()}

    deadline = time.monotonic() + timeout
    while (stable := ends(IsolationLevel.READ_COMMITTED)) != (end := ends(
            IsolationLevel.READ_UNCOMMITTED)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{topic}: an open transaction holds the stable offsets {stable} "
                               f"below the ends {end} for {timeout} s")
        time.sleep(0.5)


def metrics_text(port: int) -> str:
    """A worker's /metrics page (Prometheus text format)."""
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


def metric_sum(text: str, sample: str, **labels: str) -> float:
    """The sum of the `sample` series of a /metrics page whose labels include `labels` (0 when
    there is none)."""
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == sample and labels.items() <= s.labels.items())


def latest_json_by_key(records: list[tuple[bytes | None, bytes | None, int]]) -> dict[str, Any]:
    return {k.decode(): orjson.loads(v) for k, v, _ in records if k is not None and v is not None}


def assert_revenue_matches(final: dict[str, Any], oracle: dict[str, Any]) -> None:
    """Exact on counts and max, to the cent on sums (float addition order differs by path)."""
    assert set(final) == set(oracle), (
        f"users missing: {sorted(set(oracle) - set(final))[:5]}, "
        f"unexpected: {sorted(set(final) - set(oracle))[:5]}")
    wrong = []
    for user, want in oracle.items():
        got = final[user]
        if (got["orders"] != want["orders"] or got["largest"] != want["largest"]
                or abs(got["revenue"] - want["revenue"]) > 0.011):
            wrong.append((user, got, want))
    assert not wrong, f"{len(wrong)} users differ from the oracle, e.g. {wrong[:3]}"


class WorkerProcess(worker_process.WorkerProcess):
    """A worker of a test: output in a file under `log_dir`, group timeouts of 6 s, a bounded
    run (`idle`) unless told otherwise; PROCESSOR_CRASH_AT only when the test sets it."""

    started: list[WorkerProcess] = []  # killed by the `reap_workers` fixture after each test

    def __init__(self, topology: Path, bootstrap: str, state_dir: Path, log_dir: Path, *,
                 guarantee: str = "exactly_once", worker_id: str | None = None,
                 idle: str | None = "3s", env: dict[str, str] | None = None,
                 commit_interval: str = "100ms") -> None:
        cmd = worker_process.worker_command(
            topology, bootstrap, state_dir, guarantee=guarantee, commit_interval=commit_interval,
            worker_id=worker_id or None, stop_when_idle=idle or None)
        full_env = {**os.environ, "PROCESSOR_MAX_POLL_INTERVAL_MS": "6000",
                    "PROCESSOR_SESSION_TIMEOUT_MS": "6000", **(env or {})}
        if "PROCESSOR_CRASH_AT" not in (env or {}):
            full_env.pop("PROCESSOR_CRASH_AT", None)
        super().__init__(cmd, log_dir / f"worker-{uuid.uuid4().hex[:6]}.log", full_env)
        WorkerProcess.started.append(self)


def topology_file(tmp: Path, template: str, name: str, replacements: dict[str, str]) -> Path:
    """A copy of `topologies/<template>` with replacements, next to copies of the Python modules
    of `topologies/` (references resolve against the topology file's directory)."""
    text = (ROOT / "topologies" / template).read_text()
    for old, new in replacements.items():
        text = text.replace(old, new)
    path = tmp / f"{name}.yaml"
    path.write_text(text)
    for module in (ROOT / "topologies").glob("*.py"):
        shutil.copyfile(module, tmp / module.name)
    return path


def fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path
