"""Where a batch run's outputs go: files, written atomically, and topics, in one transaction.

A `file` sink's rows reach their file only when the whole run succeeded (runtime/files/);
everything bound for a topic (sinks, late records, dead letters) is produced by one
transactional producer and committed at the very end, so a run that fails or is killed
leaves nothing half-written anywhere and a rerun writes everything exactly once. The producer
is created on first use: a run from files to files needs no broker.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException, Producer

from processor.errors import ProcessorError
from processor.operators import Batch
from processor.runtime.config import WorkerConfig
from processor.runtime.files.write import FileSinkWriter, sink_row
from processor.runtime.kafka.clients import producer_config
from processor.spec.bounded import FileSinkSpec

log = logging.getLogger("processor.batch")

TXN_TIMEOUT_MS = 900_000
"""A batch run's topic outputs are one transaction: as long as Kafka's default cap allows
(`transaction.max.timeout.ms`, 15 min); a longer run writing topics needs that raised."""


class FileSinks:
    """The `file` sinks of a run, by the topic name the graph gives them."""

    def __init__(self, sinks: dict[str, FileSinkSpec], base: Path) -> None:
        self.writers = {topic: FileSinkWriter(spec, base) for topic, spec in sinks.items()}
        self._specs = sinks
        self.rows: dict[str, int] = dict.fromkeys(sinks, 0)

    def emitter(self, topic: str) -> Any:
        write, spec = self.writers[topic].write, self._specs[topic]
        rows = self.rows

        def emit(batch: Batch) -> None:
            write([sink_row(spec, k, v) for k, v, _, _ in batch])
            rows[topic] += len(batch)

        return emit

    def late_emitter(self, topic: str) -> Any:
        """A window's late records as rows of their own (the record, without the headers)."""
        emit = self.emitter(topic)

        def late(entries: list[Any]) -> None:
            emit([record for record, _, _, _ in entries])

        return late

    def commit(self) -> None:
        for writer in self.writers.values():
            writer.commit()

    def abort(self) -> None:
        for writer in self.writers.values():
            writer.abort()


class TopicOutputs:
    """The run's one transactional producer, made when a record first goes to a topic."""

    def __init__(self, config: WorkerConfig, application: str) -> None:
        self.config, self.application = config, application
        self.producer: Producer | None = None

    def __call__(self) -> Producer:
        if self.producer is None:
            txn_id = f"{self.application}-batch"
            conf = producer_config(self.config, txn_id)
            conf["transaction.timeout.ms"] = TXN_TIMEOUT_MS
            try:
                producer = Producer(conf)
                producer.list_topics(timeout=10)  # an unreachable broker says so at once
                producer.init_transactions(30)
                producer.begin_transaction()
            except KafkaException as exc:
                raise ProcessorError(
                    f"cannot write topic outputs: {exc.args[0].str()} (a batch run writes "
                    f"topics through the broker at {self.config.bootstrap_servers}: check "
                    "bootstrap_servers / --bootstrap-servers and the broker, or write every "
                    "output to a file with --output)") from None
            log.info("topic outputs: transaction begun", extra={"transactional_id": txn_id})
            self.producer = producer
        return self.producer

    def commit(self) -> None:
        if self.producer is not None:
            self.producer.flush()
            self.producer.commit_transaction(TXN_TIMEOUT_MS / 1000)

    def abort(self) -> None:
        if self.producer is not None:
            try:
                self.producer.abort_transaction(30)
            except KafkaException as exc:
                log.warning("abort failed", extra={"error": exc.args[0].str()})
