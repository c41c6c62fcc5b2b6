"""The worker: one consumer-group member running tasks for its assigned partitions.

This module sets the worker up (clients, tables, checkpointer, HTTP), runs its loop, recovers
from failed checkpoints and shuts it down. Its parts get callbacks from it and never import
it: runtime/task_manager.py (rebalances: open, restore, start and close tasks),
runtime/telemetry.py (metrics, health, readiness, progress), runtime/global_state.py (global
tables and broadcasts), runtime/serving/endpoint.py (the HTTP port), runtime/durability/checkpoint.py (the
commit). The loop is a sequence of named phases (see `run`), after Kafka Streams'
StreamThread.runOnce.

Recovery: a failed or fenced checkpoint (or a produce refused mid-batch, or a task whose input
cannot start) closes every task dirty and reopens them at the committed offsets; the group
membership stays.
"""

from __future__ import annotations

import logging
import signal
import time
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from processor.errors import ProcessorError
from processor.graph import BuildContext, Topology
from processor.graph.model import entry_cap
from processor.observability.metrics import Metrics
from processor.observability.progress import ProgressBar
from processor.runtime import faults
from processor.runtime.bounded_run import BoundedRun, BoundedTopics
from processor.runtime.config import WorkerConfig
from processor.runtime.durability.checkpoint import Checkpointer, CheckpointFailed, is_fatal, kafka_error
from processor.runtime.durability.restore import changelog_identities
from processor.runtime.durability.tables import TableFollower
from processor.runtime.gc_tuning import tune_gc
from processor.runtime.global_state import GlobalState
from processor.runtime.idle_stop import IdleStop
from processor.runtime.kafka.batch import by_partition, consumer_error
from processor.runtime.kafka.clients import (
    admin_config,
    consumer_config,
    producer_config,
    restore_consumer_config,
)
from processor.runtime.kafka.collector import RecordCollector
from processor.runtime.kafka.deadletter import DeadLetterWriter
from processor.runtime.kafka.purge import RepartitionPurger
from processor.runtime.kafka.serdes import Serdes
from processor.runtime.kafka.topics import ensure_topics
from processor.runtime.serving.directory import directory_topic
from processor.runtime.serving.endpoint import Endpoint
from processor.runtime.task_manager import TaskManager
from processor.runtime.tasks.task import TaskState
from processor.runtime.telemetry import Telemetry
from processor.state.memory import state_memory

log = logging.getLogger("processor.worker")


class Worker:
    def __init__(self, topology: Topology, config: WorkerConfig, *,
                 stop_when_idle_ms: int | None = None, metrics: Metrics | None = None,
                 bounded: BoundedTopics | None = None) -> None:
        """`bounded`: topic -> (source, range), topic ranges to run over (bounded_run.py)."""
        self.topology = topology
        self.config = config
        self.metrics = metrics or Metrics()
        self.idle_stop = (IdleStop(stop_when_idle_ms, config, topology)
                          if stop_when_idle_ms is not None else None)
        self._bounded = bounded or {}
        self.bounded_run: BoundedRun | None = None
        self.worker_id = config.resolved_worker_id()
        self.delivery_errors: list[KafkaError] = []
        self._stopping = False
        self.serdes = Serdes(config.schema_registry)
        self.collector = RecordCollector(lambda: self.producer, {}, self.serdes)
        self.dead_letters = DeadLetterWriter(lambda: self.producer, topology.dlq_topic, topology.name)
        self.heartbeat = time.monotonic()  # the loop's last turn: /healthz
        self.endpoint: Endpoint | None = None  # metrics_port: HTTP and the worker directory
        self.progress_bar: ProgressBar | None = None  # restore progress on a terminal (CLI)
        self._last_activity = time.monotonic()  # input or (re)assignment, for bounded runs
        self._started_at = time.monotonic()
        self.memory = state_memory(config.memory_budget)
        self.global_state = GlobalState(topology, config.state_dir, self.serdes, self.memory)

    # -- setup ----------------------------------------------------------------------------------

    def _setup(self) -> None:
        cfg = self.config
        admin = AdminClient(admin_config(cfg))
        self.collector.partitions.update(ensure_topics(
            admin, self.topology, create=cfg.create_topics,
            create_sources=cfg.create_source_topics,
            replication_factor=cfg.replication_factor,
            directory=directory_topic(self.topology.name) if cfg.metrics_port is not None else None,
            changelog_configs=cfg.changelog_topic_configs, bootstrap_servers=cfg.bootstrap_servers,
            wait_for_sources_s=cfg.source_topic_wait_ms / 1000))
        if self._bounded:
            self.bounded_run = BoundedRun.resolve(admin, self._bounded, self.topology,
                                                  restore_consumer_config(cfg))
        try:
            self.producer = self._new_producer()
            self.consumer = Consumer(consumer_config(cfg, self.topology.name))
            restore_consumer, table_consumer = (Consumer(restore_consumer_config(cfg)),
                                                Consumer(restore_consumer_config(cfg)))
        except KafkaException as exc:  # e.g. a bad `kafka:` passthrough property: exit 2
            raise ProcessorError(f"cannot create the Kafka clients: {exc.args[0].str()} (check the "
                                 "`kafka:` / PROCESSOR_CONSUMER / PROCESSOR_PRODUCER properties and "
                                 "that the broker is reachable)") from None
        self.tables = TableFollower(table_consumer)
        # global tables and broadcast sources: read to the end before the first record
        self.global_state.start(self.tables, self.collector.partitions,
                                cfg.table_bootstrap_timeout_ms / 1000)
        self.checkpointer = Checkpointer(self.producer, self.consumer,
                                         exactly_once=cfg.exactly_once, metrics=self.metrics,
                                         delivery_errors=self.delivery_errors, memory=self.memory)
        self.checkpointer.membership_doubt = self._membership_doubt
        self.checkpointer.on_committed = RepartitionPurger.for_topology(
            admin, self.topology, cfg.repartition_purge_interval_ms).committed_offsets
        # a zombie's transaction on a changelog ends by its timeout (aborted by the broker)
        txn_timeout_ms = int(producer_config(cfg, "-").get("transaction.timeout.ms", 60_000))
        self.task_manager = TaskManager(
            self.topology, cfg, self.consumer, restore_consumer, self.tables, self.metrics,
            open_txn_wait_s=txn_timeout_ms / 1000 + 30, context_for=self._task_context,
            checkpoint=self.checkpointer.checkpoint, abort_uncommitted=self._abort_uncommitted,
            on_restored=lambda task: self.telemetry.task_restored(task),
            on_change=self._publish_assignment, touch=self._touch,
            start_at=self.bounded_run.start_at if self.bounded_run else None)
        self.telemetry = Telemetry(self.metrics, cfg, self.task_manager, self.consumer,
                                   self.collector.produced, last_turn=lambda: self.heartbeat,
                                   stopping=lambda: self._stopping, started_at=self._started_at,
                                   progress_bar=self.progress_bar, memory=self.memory)
        restorer = self.task_manager.restorer
        restorer.hooks.append(lambda n: n and self.metrics.restore_records.inc(n))
        restorer.hooks.append(lambda n: n and faults.point("restore.chunk"))
        restorer.on_progress = self.telemetry.restore_progress
        restorer.changelog_ids = changelog_identities(  # a re-created changelog: stale stores
            admin, [s.changelog_topic for s in self.topology.stores])
        tm = self.task_manager
        self.consumer.subscribe(self.topology.source_topics, on_assign=tm.on_assign,
                                on_revoke=tm.on_revoke, on_lost=tm.on_lost)
        if cfg.metrics_port is not None:
            self.endpoint = Endpoint(cfg, self.topology, self.worker_id, self.metrics,
                                     self.collector.partitions, health=self.telemetry.health,
                                     ready=self.telemetry.readiness,
                                     tasks=lambda: self.task_manager.tasks, stop=self.stop,
                                     stopping=lambda: self._stopping)
            self.endpoint.start()
        log.info("worker started", extra={
            "topology": self.topology.name, "worker_id": self.worker_id,
            "guarantee": cfg.processing_guarantee, "topics": self.topology.source_topics})
        log.debug("worker config", extra={"config": cfg.masked()})

    def _new_producer(self) -> Producer:
        txn_id = f"{self.topology.name}-{self.worker_id}" if self.config.exactly_once else None
        conf = producer_config(self.config, txn_id)
        if not self.config.exactly_once:
            # at-least-once must see every failed delivery before it commits offsets (a
            # transaction does that check for exactly-once). Not `delivery.report.only.error`:
            # the checkpoint needs the changelog records' successful reports for their offsets.
            conf["on_delivery"] = self._on_output_delivery
        producer = Producer(conf)
        if txn_id:
            producer.init_transactions(60)
            producer.begin_transaction()
            log.info("transactional producer ready", extra={"transactional_id": txn_id})
        return producer

    def _on_output_delivery(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            self.delivery_errors.append(err)

    def _task_context(self, partition: int) -> BuildContext:
        """What a new task's operators are built with: emitters, codecs, dead letters, tables."""
        c = self.collector
        return BuildContext(c.emitter_for, partition, entry_cap(self.config.cache_max_entries),
                            late_emitter_for=c.late_emitter_for,
                            watermark_emitter_for=c.watermark_emitter_for,
                            partitions_of=c.partitions.__getitem__,
                            serde_for=self.serdes, dead_letter=self.dead_letters,
                            table_for=self.global_state.table_for, memory=self.memory)

    def _publish_assignment(self) -> None:
        if self.endpoint is not None:
            self.endpoint.publish(self.task_manager.assignment(), self.consumer.memberid())

    def _touch(self) -> None:
        self._last_activity = time.monotonic()

    # -- the loop -------------------------------------------------------------------------------

    def stop(self, *_: Any) -> None:
        self._stopping = True

    def run(self) -> int:
        """Run until SIGTERM/SIGINT (or idle, or the end of its topic ranges). Returns the
        exit code.

        Each turn of the loop:
          1. restore: a chunk of changelog for restoring tasks; table and broadcast updates
          2. recover: reopen the tasks if one could not start its input; start restoring the
             new tasks whose committed offsets became stable
          3. poll: a batch of input (without waiting while anything restores)
          4. process: each partition's records to its task (a failed produce recovers and
             starts the next turn)
          5. commit, every `commit_interval_ms`: time passes (idle partitions, timers), the
             checkpoint, the metrics it settled, a progress line
          6. --stop-when-idle: stop once idle and the group's input is drained, then log (and
             keep for the CLI) what stayed open: runtime/idle_stop.py
          7. topic ranges: end the partitions at their end; once every task is finished, the
             final checkpoint and the exit (runtime/bounded_run.py)
        """
        self._setup()
        tune_gc()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.stop)
        interval = self.config.commit_interval_ms / 1000
        next_checkpoint = time.monotonic() + interval
        try:
            while not self._stopping:
                self.heartbeat = time.monotonic()
                self._restore_phase()
                self._recover_phase()
                msgs = self._poll_phase()
                if msgs and not self._process_phase(msgs):
                    continue
                now = time.monotonic()
                if now >= next_checkpoint:
                    self._commit_phase(now)
                    next_checkpoint = now + interval
                if self.idle_stop is not None and self._idle_stop_done(now):
                    break
                if self.bounded_run is not None and self.bounded_run.done(
                        self.task_manager, self.consumer, self._commit):
                    break
            self._commit()
            if self.idle_stop is not None and not self._stopping:  # ended idle
                self.idle_stop.report(self.task_manager.tasks.values())
        finally:
            self._shutdown()
        return 0

    def _restore_phase(self) -> None:
        if self.task_manager.restorer.busy:
            self.task_manager.restorer.step(self.config.restore_batch_size, 0.05)
        self.tables.step(self.config.restore_batch_size, 0)  # table and broadcast updates

    def _recover_phase(self) -> None:
        failed = self.task_manager.take_failed_start()
        if failed is not None:
            self._recover(failed)
        self.task_manager.restore_when_stable()

    def _poll_phase(self) -> list[Any]:
        restoring = self.task_manager.restorer.busy or self.tables.busy
        return self.consumer.consume(self.config.batch_size,
                                     0 if restoring else self.config.poll_timeout_ms / 1000)

    def _process_phase(self, msgs: list[Any]) -> bool:
        """False when the producer failed mid-batch (the tasks were reopened)."""
        started = time.perf_counter()
        try:
            self._dispatch(msgs)
        except Exception as exc:
            self._produce_failed(exc)
            return False
        self._last_activity = time.monotonic()
        self.metrics.processing_latency.observe(time.perf_counter() - started)
        faults.point("batch.processed")
        return True

    def _dispatch(self, msgs: list[Any]) -> None:
        tasks = self.task_manager.tasks
        for tp, batch in by_partition(msgs, consumer_error).items():
            task = tasks.get(tp)
            if task is None or task.state is not TaskState.RUNNING:
                continue  # fetched before a revoke/pause took effect; will be re-read
            if self.bounded_run is not None and not (batch := self.bounded_run.within(tp, batch)):
                continue
            task.process(batch)
            self.telemetry.processed(tp[0], len(batch), task.last_time)

    def _commit_phase(self, now: float) -> None:
        self._tick(now)
        self._commit()
        self.telemetry.log_progress(now)

    def _tick(self, now: float) -> None:
        """Idle input partitions and processing-time timers: time passing without records."""
        now_ms = int(time.time() * 1000)
        try:
            for task in self.task_manager.tasks.values():
                task.tick(now_ms, now)
        except Exception as exc:
            self._produce_failed(exc)

    def _commit(self) -> None:
        """Checkpoint every task, then export what they counted since the last one."""
        try:
            self.checkpointer.checkpoint(list(self.task_manager.tasks.values()))
        except CheckpointFailed as exc:
            self._recover(exc)
        self.telemetry.export()

    def _idle_stop_done(self, now: float) -> bool:
        stop = self.idle_stop
        assert stop is not None
        if not stop.idle(now - self._last_activity, self.task_manager):
            return False
        if stop.drained(self.consumer):
            log.info("idle: stopping bounded run",
                     extra={"records": self.telemetry.records_processed})
            return True
        self._last_activity = now  # look again after another idle period
        return False

    # -- recovery -------------------------------------------------------------------------------

    def _produce_failed(self, exc: Exception) -> None:
        """The producer failed mid-batch (fenced, fatal): the same path as a failed commit.
        Anything that is not a Kafka error is a bug and propagates."""
        err = kafka_error(exc)
        if err is None:
            raise exc
        self._recover(CheckpointFailed(f"produce failed: {err.str()}", fatal=is_fatal(err)))

    def _recover(self, exc: CheckpointFailed) -> None:
        """A failed or fenced transaction (a rebalance bumped the group generation, another
        producer took the transactional id, the member was kicked out while stopped): drop the
        uncommitted work of every task and reopen them at the committed offsets. The group
        membership stays: if this member lost its partitions, the consumer's lost callback
        follows and the group hands them out afresh."""
        log.error("checkpoint failed; closing tasks dirty and reopening them",
                  extra={"error": str(exc), "fatal": exc.fatal})
        self.task_manager.reset(self.consumer, gone=[], fatal=exc.fatal)

    def _abort_uncommitted(self, fatal: bool) -> None:
        """Every task is closed dirty. Under exactly-once also replace the producer: the new
        one's init_transactions aborts the open transaction (or fences a zombie), which works
        even when the old producer is broken — an abort_transaction on a fenced producer would
        only block until its timeout."""
        if self.config.exactly_once:
            self.metrics.transactions.labels("aborted").inc()
        if self.config.exactly_once or fatal:
            try:
                self.producer.purge()
            except Exception as exc:
                if kafka_error(exc) is None:
                    raise
            self.producer = self._new_producer()
            self.checkpointer.producer = self.producer
            self.delivery_errors.clear()

    def _membership_doubt(self) -> str | None:
        """At-least-once writes changelogs without a transaction to fence them: a member the
        group dropped while its loop stood still (past max.poll.interval, e.g. in a flush
        during a broker restart, or stopped past the session timeout) would write stale state
        after the next owner restored it — records lost, found by the fault campaign. Asked
        right before the changelog writes; the loop's last turn precedes its last poll."""
        stalled = time.monotonic() - self.heartbeat
        limit = 0.8 * min(self.config.max_poll_interval_ms, self.config.session_timeout_ms) / 1000
        if stalled <= limit:
            return None
        return (f"the loop stood still {stalled:.1f}s (limit {limit:.1f}s): the group may have "
                "moved this member's partitions; changelogs not written")

    # -- shutdown -------------------------------------------------------------------------------

    def _shutdown(self) -> None:
        log.info("worker stopping", extra={"records": self.telemetry.records_processed})
        try:
            self.consumer.close()  # leaves the group; on_revoke checkpoints and closes tasks
        except KafkaException as exc:
            log.warning("consumer close failed", extra={"error": exc.args[0].str()})
        self.task_manager.close_all(dirty=False)
        self.task_manager.restorer.consumer.close()
        if self.idle_stop is not None:
            self.idle_stop.close()
        self.tables.close()
        self.global_state.close()
        try:
            self.producer.flush(30)
        except Exception as exc:
            if kafka_error(exc) is None:
                raise
            log.warning("producer flush on shutdown failed", extra={"error": str(exc)})
        if self.endpoint is not None:
            self.endpoint.stop()
        log.info("worker stopped", extra={"records": self.telemetry.records_processed})

