"""Shared fixtures. The broker under test, by `PROCESSOR_TEST_KAFKA`:
`apache` (default: the reference, a single-node Apache Kafka the suite starts itself, installed
by scripts/install-kafka.sh), `tansu` (the embedded zero-JVM broker) or `testcontainers`
(Kafka in Docker, where an engine is reachable). `KAFKA_BOOTSTRAP_SERVERS` (an existing
cluster) wins over all three."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator

import pytest

from tests.integration.kafka import BrokerUnderTest, WorkerProcess, probe_aborted_isolation

BROKER_KINDS = ("apache", "tansu", "testcontainers")


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerUnderTest]:
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield BrokerUnderTest(external, "external", probe_aborted_isolation(external))
        return
    kind = os.environ.get("PROCESSOR_TEST_KAFKA", "apache")
    if kind not in BROKER_KINDS:
        raise pytest.UsageError(f"PROCESSOR_TEST_KAFKA={kind!r}: expected one of {BROKER_KINDS}")
    if kind == "testcontainers":
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer() as kafka:
            bootstrap = kafka.get_bootstrap_server()
            yield BrokerUnderTest(bootstrap, "testcontainers-kafka",
                                  probe_aborted_isolation(bootstrap))
        return
    if kind == "tansu":
        from processor.tools.broker import EmbeddedBroker

        # Tansu has no KIP-848 groups: workers (subprocesses inherit this) use the classic protocol
        os.environ["PROCESSOR_GROUP_PROTOCOL"] = "classic"
        log_file = tmp_path_factory.mktemp("broker") / "tansu.log"
        with EmbeddedBroker(log_file=log_file) as embedded:
            yield BrokerUnderTest(embedded.bootstrap, "embedded-tansu",
                                  probe_aborted_isolation(embedded.bootstrap))
        return
    from processor.tools.apache_kafka import ApacheKafkaBroker

    with ApacheKafkaBroker(data_dir=tmp_path_factory.mktemp("kafka"), install=True) as kafka:
        isolates = probe_aborted_isolation(kafka.bootstrap)
        if not isolates:  # the reference broker must: fail the session rather than skip
            raise RuntimeError("Apache Kafka showed an aborted record to read_committed")
        yield BrokerUnderTest(kafka.bootstrap, "apache-kafka", isolates, server=kafka)


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(autouse=True)
def reap_workers() -> Iterator[None]:
    """No worker outlives its test, whatever the test's outcome."""
    yield
    while WorkerProcess.started:
        WorkerProcess.started.pop().kill()


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """A CLI command run in-process (`main([...])`) installs the product's terminal handler on
    the root logger, bound to the stderr of that moment (a test's capture): later tests must
    not log into that closed stream (it prints `--- Logging error ---` into theirs)."""
    from processor.observability.logging import TerminalHandler

    root = logging.getLogger()
    level = root.level
    yield
    root.handlers[:] = [h for h in root.handlers if not isinstance(h, TerminalHandler)]
    root.setLevel(level)
