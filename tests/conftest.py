"""Shared fixtures. The broker: KAFKA_BOOTSTRAP_SERVERS if set; else a testcontainers Kafka
when PROCESSOR_TEST_KAFKA=testcontainers and Docker is reachable; else the embedded broker."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from tests.integration.kafka import BrokerUnderTest, WorkerProcess, probe_aborted_isolation


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerUnderTest]:
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield BrokerUnderTest(external, "external", probe_aborted_isolation(external))
        return
    if os.environ.get("PROCESSOR_TEST_KAFKA") == "testcontainers":
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer() as kafka:
            bootstrap = kafka.get_bootstrap_server()
            yield BrokerUnderTest(bootstrap, "testcontainers-kafka",
                                  probe_aborted_isolation(bootstrap))
        return
    from processor.runtime.broker import EmbeddedBroker

    log_file = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(log_file=log_file) as embedded:
        yield BrokerUnderTest(embedded.bootstrap, "embedded-tansu",
                              probe_aborted_isolation(embedded.bootstrap))


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(autouse=True)
def reap_workers() -> Iterator[None]:
    """No worker outlives its test, whatever the test's outcome."""
    yield
    while WorkerProcess.started:
        WorkerProcess.started.pop().kill()
