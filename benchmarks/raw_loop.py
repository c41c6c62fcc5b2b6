"""The raw loop: the ceiling every benchmark scenario is measured against.

    python -m benchmarks.raw_loop TOPOLOGY --bootstrap-servers HOST:PORT [--guarantee G]
        [--commit-interval 100ms] [--stop-when-idle 2s] [--config worker.yaml]

It copies every record of the topology's input topics unchanged (key, value, timestamp) to its
one output topic and does nothing else: no decoding, no operator, no state. Everything a worker
cannot avoid stays the worker's own: the librdkafka settings (runtime/kafka/clients.py, built
from the same WorkerConfig: PROCESSOR_* environment, `--config`, flags), the consumer group
(the topology name), the poll (`batch_size`, `poll_timeout_ms`), the grouping of a batch by
partition, the produce call with its back-pressure, and the commit protocol at the same commit
interval: under exactly_once one transaction per interval holding the outputs and the consumed
offsets (send_offsets_to_transaction, then commit), under at_least_once a flush, then a
synchronous offset commit. It logs the worker's JSON lines (`partitions assigned`,
`checkpoint committed` with its offsets, `worker stopped`), so the benchmark harness measures it
as it measures a worker: a subprocess of its own, the same clock, RSS and CPU.

The topology file is read for its group name and topics only (benchmarks/topologies/
passthrough.yaml). `--read-only` copies nothing: it consumes and commits (under exactly_once
transactions holding only the offsets), the ceiling of the read side alone, which a scenario
writing far fewer records than it reads (an aggregate) is closer to. A script of the benchmark,
not a processor feature.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

if __package__ in (None, ""):  # `python benchmarks/raw_loop.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from processor.graph import Topology, build_topology
from processor.runtime.config import WorkerConfig, load_config
from processor.runtime.durability.checkpoint import send_offsets
from processor.runtime.gc_tuning import tune_gc
from processor.runtime.kafka.batch import by_partition
from processor.runtime.kafka.clients import (
    admin_config,
    consumer_config,
    producer_config,
    restore_consumer_config,
)
from processor.runtime.kafka.drain import undrained
from processor.runtime.kafka.produce import produce_when_room
from processor.runtime.kafka.topics import ensure_topics
from processor.spec import load_spec
from processor.timeutil import parse_duration_ms

log = logging.getLogger("processor.worker")  # the worker's logger: the same log lines


def raw_command(topology: Path, bootstrap: str, *, guarantee: str, stop_when_idle: str,
                commit_interval: str, config: Path | None = None,
                read_only: bool = False) -> list[str]:
    """The argv of a raw loop, as processor/tools/worker_process.py's `worker_command` is a
    worker's (run from the repository root)."""
    cmd = [sys.executable, "-m", "benchmarks.raw_loop", str(topology),
           "--bootstrap-servers", bootstrap, "--guarantee", guarantee,
           "--commit-interval", commit_interval, "--stop-when-idle", stop_when_idle]
    return (cmd + (["--config", str(config)] if config is not None else [])
            + (["--read-only"] if read_only else []))


def raw_clients(config: WorkerConfig, group: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The consumer and producer properties: the worker's own (its Worker._setup and
    _new_producer), the transactional id under exactly_once."""
    txn_id = f"{group}-raw" if config.exactly_once else None
    return consumer_config(config, group), producer_config(config, txn_id)


class RawLoop:
    def __init__(self, config: WorkerConfig, topology: Topology, *,
                 stop_when_idle_ms: int | None, read_only: bool = False) -> None:
        outputs = [e.topic for s in topology.subtopologies for e in s.sinks if not e.internal]
        if len(outputs) != 1:
            raise SystemExit(f"raw loop: the topology needs exactly one output topic, has {outputs}")
        self.config, self.output = config, outputs[0]
        self.inputs = topology.source_topics
        self.idle_ms = stop_when_idle_ms
        self.read_only = read_only
        self.eos = config.exactly_once
        admin = AdminClient(admin_config(config))
        ensure_topics(admin, topology, create=True, bootstrap_servers=config.bootstrap_servers)
        consumer_conf, producer_conf = raw_clients(config, topology.name)
        self.delivery_errors: list[KafkaError] = []
        if not self.eos:  # as the worker: every failed delivery is seen before offsets commit
            producer_conf["on_delivery"] = self._delivered
        self.consumer = Consumer(consumer_conf)
        self.producer = Producer(producer_conf)
        if self.eos:
            self.producer.init_transactions(60)
            self.producer.begin_transaction()
        self.positions: dict[tuple[str, int], int] = {}  # next offset to commit
        self.committed: dict[tuple[str, int], int] = {}
        self.records = 0
        self.assigned = False
        self._stopping = False

    def _delivered(self, err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            self.delivery_errors.append(err)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        consumer.incremental_assign(partitions)
        self.assigned = True
        log.info("partitions assigned", extra={
            "partitions": [f"{p.topic}[{p.partition}]" for p in partitions], "restoring": []})

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.checkpoint()
        gone = {(p.topic, p.partition) for p in partitions}
        for tp in gone:
            self.positions.pop(tp, None)
            self.committed.pop(tp, None)
        consumer.incremental_unassign(partitions)
        log.info("partitions revoked", extra={"partitions": sorted(f"{t}[{p}]" for t, p in gone)})

    def stop(self, *_: Any) -> None:
        self._stopping = True

    def run(self) -> int:
        self.consumer.subscribe(self.inputs, on_assign=self._on_assign, on_revoke=self._on_revoke)
        tune_gc()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.stop)
        log.info("worker started", extra={"raw": True, "guarantee": self.config.processing_guarantee,
                                          "topics": self.inputs, "output": self.output})
        interval = self.config.commit_interval_ms / 1000
        batch_size, timeout = self.config.batch_size, self.config.poll_timeout_ms / 1000
        idle_s = (self.idle_ms or 0) / 1000
        next_checkpoint = time.monotonic() + interval
        last_activity = time.monotonic()
        try:
            while not self._stopping:
                msgs = self.consumer.consume(batch_size, timeout)
                if msgs:
                    self._copy(msgs)
                    last_activity = time.monotonic()
                now = time.monotonic()
                if now >= next_checkpoint:
                    self.checkpoint()
                    next_checkpoint = now + interval
                if self.idle_ms is not None and self.assigned and now - last_activity >= idle_s:
                    if self._drained():
                        log.info("idle: stopping bounded run", extra={"records": self.records})
                        break
                    last_activity = now  # look again after another idle period
            self.checkpoint()
        finally:
            self.consumer.close()
            self.producer.flush(30)
            log.info("worker stopped", extra={"records": self.records})
        return 0

    def _copy(self, msgs: list[Any]) -> None:
        produce, output = self.producer.produce, self.output
        for tp, batch in by_partition(msgs, _consumer_error).items():
            for m in () if self.read_only else batch:
                value, key, t = m.value(), m.key(), m.timestamp()[1]
                try:
                    produce(output, value, key, timestamp=t)
                except BufferError:
                    produce_when_room(self.producer, output, value, key, timestamp=t)
            self.positions[tp] = batch[-1].offset() + 1
            self.records += len(batch)

    def checkpoint(self) -> None:
        """Commit what was copied since the last checkpoint (nothing when nothing was)."""
        todo = {tp: off for tp, off in self.positions.items() if self.committed.get(tp) != off}
        if not todo:
            return
        started = time.perf_counter()
        offsets = [TopicPartition(t, p, off) for (t, p), off in todo.items()]
        if self.eos:
            send_offsets(self.producer, offsets, self.consumer.consumer_group_metadata())
            self.producer.commit_transaction(60)
            self.producer.begin_transaction()
        else:
            if self.producer.flush(60):
                raise SystemExit("raw loop: records not delivered within 60 s")
            if self.delivery_errors:
                raise SystemExit(f"raw loop: delivery failed: {self.delivery_errors[0].str()}")
            self.consumer.commit(offsets=offsets, asynchronous=False)
        self.committed.update(todo)
        log.debug("checkpoint committed", extra={
            "tasks": len(todo), "seconds": round(time.perf_counter() - started, 4),
            "offsets": {f"{t}[{p}]": off for (t, p), off in self.committed.items()}})

    def _drained(self) -> bool:
        """As the worker's --stop-when-idle (runtime/idle_stop.py): quiet for the idle period,
        then stop once the group's committed offsets reach the end of its input."""
        probe = Consumer(restore_consumer_config(self.config))
        try:
            return not undrained(self.consumer, probe, self.inputs,
                                 earliest=self.config.auto_offset_reset == "earliest")
        finally:
            probe.close()


def _consumer_error(_m: Any, err: KafkaError) -> None:
    if err.code() == KafkaError._PARTITION_EOF:
        return
    if err.fatal():
        raise SystemExit(f"raw loop: fatal consumer error: {err.str()}")
    log.warning("consumer error", extra={"error": err.str()})


def main(argv: list[str] | None = None) -> int:
    from processor.observability.logging import setup_logging

    p = argparse.ArgumentParser(prog="python -m benchmarks.raw_loop", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("topology", help="topology YAML: its group name, input topics, one output topic")
    p.add_argument("--bootstrap-servers")
    p.add_argument("--guarantee", choices=["exactly_once", "at_least_once"])
    p.add_argument("--commit-interval")
    p.add_argument("--stop-when-idle")
    p.add_argument("--config", help="worker config YAML (the clients' settings come from it)")
    p.add_argument("--read-only", action="store_true",
                   help="produce nothing: consume and commit only (the read side's ceiling)")
    args = p.parse_args(argv)
    config = load_config(args.config, bootstrap_servers=args.bootstrap_servers,
                         processing_guarantee=args.guarantee,
                         commit_interval_ms=args.commit_interval, log_format="json")
    setup_logging(config.log_level, config.log_format)
    idle = parse_duration_ms(args.stop_when_idle) if args.stop_when_idle else None
    return RawLoop(config, build_topology(load_spec(args.topology)), stop_when_idle_ms=idle,
                   read_only=args.read_only).run()


if __name__ == "__main__":
    sys.exit(main())
