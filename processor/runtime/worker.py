"""The worker: one consumer-group member running tasks for its assigned partitions.

Main loop: restore a chunk (if any task is restoring) -> apply table and broadcast updates
(runtime/tables.py) -> consume a batch -> hand each partition's records to its task ->
checkpoint every `commit_interval_ms`. Rebalances are incremental (KIP-848 with the broker's
`range` assignor, or `cooperative-sticky` under `group_protocol: classic`): a rebalance names
only the partitions that move, so the other tasks keep processing through it.
On revoke all tasks are checkpointed (one transaction) and the revoked ones closed clean; on
assign the new tasks start restoring with their input partitions paused until their stores
have caught up. Nothing needs partition N of two topics on one member: a per-task table is
followed by the task itself (runtime/tables.py), not through the group.
"""

from __future__ import annotations

import functools
import gc
import logging
import signal
import socket
import time
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from processor.errors import ProcessorError
from processor.graph import BuildContext, Topology
from processor.observability.http import HttpServer
from processor.observability.metrics import Metrics
from processor.observability.progress import ProgressBar
from processor.operators.broadcast import BroadcastState
from processor.runtime import faults
from processor.runtime.checkpoint import Checkpointer, CheckpointFailed, is_fatal, kafka_error
from processor.runtime.clients import (
    admin_config,
    consumer_config,
    producer_config,
    restore_consumer_config,
)
from processor.runtime.collector import RecordCollector
from processor.runtime.config import WorkerConfig
from processor.runtime.deadletter import DeadLetterWriter
from processor.runtime.directory import WorkerDirectory, directory_topic
from processor.runtime.drain import undrained
from processor.runtime.purge import RepartitionPurger
from processor.runtime.queries import StateQueries
from processor.runtime.restore import Restorer
from processor.runtime.serdes import Serdes
from processor.runtime.tables import TableFollower
from processor.runtime.task import Task, TaskState
from processor.runtime.topics import ensure_topics
from processor.state.table import TableStore
from processor.timeutil.watermark import NO_WATERMARK

log = logging.getLogger("processor.worker")

TP = tuple[str, int]


class Worker:
    def __init__(self, topology: Topology, config: WorkerConfig, *,
                 stop_when_idle_ms: int | None = None, metrics: Metrics | None = None) -> None:
        self.topology = topology
        self.config = config
        self.metrics = metrics or Metrics()
        self.stop_when_idle_ms = stop_when_idle_ms
        self._drain_probe: Consumer | None = None  # bounded runs: reads the group's leftovers
        self.worker_id = config.resolved_worker_id()
        self.state_dir = config.state_dir
        self.tasks: dict[TP, Task] = {}
        self.delivery_errors: list[KafkaError] = []
        self._stopping = False
        self.serdes = Serdes(config.schema_registry)
        self.collector = RecordCollector(lambda: self.producer, {}, self.serdes)
        self.dead_letters = DeadLetterWriter(lambda: self.producer, topology.dlq_topic, topology.name)
        self.records_processed = 0
        self.heartbeat = time.monotonic()  # the loop's last turn: /healthz
        self._assigned_once = False  # the group gave this worker its first assignment: /readyz
        self.http: HttpServer | None = None
        self.progress_bar: ProgressBar | None = None  # restore progress on a terminal (CLI)
        self.directory: WorkerDirectory | None = None
        self._observed_at = 0.0  # last lag / store-size observation
        self._lag_labels: set[tuple[str, str]] = set()  # partitions with a lag series
        self._last_activity = time.monotonic()  # input or (re)assignment, for bounded runs
        self._progress_mark = (time.monotonic(), 0)
        self._started_at = time.monotonic()
        # restoring tasks: what each still waits for ("stores", "table <name>")
        self._waiting: dict[str, set[str]] = {}
        self._failed_start: CheckpointFailed | None = None  # see _on_restored
        self._unstable: list[Task] = []  # new tasks waiting for stable offsets to restore
        self._unstable_logged = 0.0
        self.global_stores: dict[str, TableStore] = {}  # global tables and broadcasts by name
        self.broadcast = BroadcastState()

    # -- clients -----------------------------------------------------------------------------

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

    # -- rebalance callbacks --------------------------------------------------------------------

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.metrics.rebalances.labels("revoke").inc()
        try:
            self.checkpointer.checkpoint(list(self.tasks.values()))
        except CheckpointFailed as exc:
            log.error("checkpoint on revoke failed; closing tasks dirty", extra={"error": str(exc)})
            self._reset_tasks(consumer, gone=partitions, fatal=exc.fatal)
            return
        for tp in [(p.topic, p.partition) for p in partitions]:
            task = self.tasks.pop(tp, None)
            if task is not None:
                self._close_task(task, dirty=False)
        consumer.incremental_unassign(partitions)
        log.info("partitions revoked", extra={"partitions": _fmt(partitions),
                                              "kept": len(self.tasks)})
        self._publish_assignment()

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.metrics.rebalances.labels("lost").inc()
        log.warning("partitions lost; closing tasks dirty", extra={"partitions": _fmt(partitions)})
        self._reset_tasks(consumer, gone=partitions, fatal=False)

    def _reset_tasks(self, consumer: Consumer, *, gone: list[TopicPartition], fatal: bool) -> None:
        """Uncommitted work is lost (an aborted transaction spans every task): close all tasks
        dirty, let the `gone` partitions go, and reopen the partitions this member keeps —
        they restore their changelog tail and resume at the committed offsets."""
        moved = {(p.topic, p.partition) for p in gone}
        kept = [TopicPartition(t, p) for t, p in self.tasks if (t, p) not in moved]
        self._discard_uncommitted(fatal=fatal)
        if gone:
            consumer.incremental_unassign(gone)
        if kept:
            for task in self._open_tasks(consumer, kept, msg="tasks reopened"):
                if task.state is TaskState.RUNNING:  # stateless: rewind to the commit now
                    try:
                        self._start_input(task)
                    except KafkaException as exc:  # e.g. NOT_COORDINATOR: see _on_restored
                        self._failed_start = CheckpointFailed(
                            f"cannot start task {task.id}: {exc.args[0].str()}", fatal=False)
                        break
        self._publish_assignment()

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.metrics.rebalances.labels("assign").inc()
        self._last_activity = time.monotonic()
        consumer.incremental_assign(partitions)
        self._open_tasks(consumer, partitions)
        self._assigned_once = True
        self._publish_assignment()

    def _open_tasks(self, consumer: Consumer, partitions: list[TopicPartition], *,
                    msg: str = "partitions assigned") -> list[Task]:
        """A task per newly owned partition, its input paused while it restores."""
        fresh: list[Task] = []
        for topic, partition in sorted((p.topic, p.partition) for p in partitions):
            if (topic, partition) in self.tasks:
                continue
            c = self.collector
            ctx = BuildContext(c.emitter_for, partition, self.config.cache_max_entries,
                               late_emitter_for=c.late_emitter_for,
                               watermark_emitter_for=c.watermark_emitter_for,
                               partitions_of=c.partitions.__getitem__,
                               serde_for=self.serdes, dead_letter=self.dead_letters,
                               table_for=lambda t: self.global_stores[t.name])
            sub = self.topology.subtopology_for(topic)
            task = Task(self.topology.name, sub, partition, ctx, self.state_dir)
            self.tasks[(topic, partition)] = task
            fresh.append(task)
        restoring = [TopicPartition(t.topic, t.partition) for t in fresh
                     if t.state is TaskState.RESTORING]
        if restoring:
            consumer.pause(restoring)
        log.info(msg, extra={"partitions": _fmt(partitions), "restoring": _fmt(restoring),
                             "protocol": self.config.group_protocol})
        for task in fresh:
            if task.state is not TaskState.RESTORING:
                continue
            if self.config.exactly_once:
                self._unstable.append(task)  # restored once its offsets are stable (below)
            else:
                self._restore(task)
        return fresh

    def _restore_when_stable(self, timeout: float = 0.5) -> None:
        """Start restoring the new tasks once the group's committed offsets of their partitions
        are stable: no transaction of a previous owner holds offsets for them. A member kicked
        out while stopped can still commit a transaction whose offsets the coordinator took
        before the rebalance; its changelog writes may reach the broker only after our restore
        ended, yet `committed()` (which waits for stable offsets) would return its offsets:
        input skipped, records lost (found by the fault campaign). The fetch waits that
        transaction out (it commits or aborts, at the latest at its timeout), a turn of the
        loop at a time."""
        tasks = [t for t in self._unstable if t.state is TaskState.RESTORING]  # not revoked
        self._unstable = []
        if not tasks:
            return
        try:
            self.consumer.committed([TopicPartition(t.topic, t.partition) for t in tasks],
                                    timeout=timeout)
        except KafkaException as exc:  # unstable (timed out), or no coordinator yet: retry
            self._unstable = tasks
            now = time.monotonic()
            if now - self._unstable_logged > 10:
                self._unstable_logged = now
                log.warning("waiting for stable committed offsets before restoring", extra={
                    "tasks": [t.id for t in tasks], "error": exc.args[0].str()})
            return
        for task in tasks:
            self._restore(task)

    def _restore(self, task: Task) -> None:
        """Stores catch up from their changelogs, per-task tables from their topics (read to
        the end before the first record is joined, then followed); the task starts when all
        are done."""
        waiting = self._waiting[task.id] = set()
        if task.stores:
            waiting.add("stores")
            self.restorer.add(task)
        for name, store in task.tables.items():
            waiting.add(f"table {name}")
            self.tables.add(f"{task.id}/{name}", task.table_topics[name], [task.partition], store,
                            on_ready=lambda task=task, name=name: self._ready(task, f"table {name}"))

    def _ready(self, task: Task, part: str) -> None:
        waiting = self._waiting.get(task.id)
        if waiting is None or task.state is not TaskState.RESTORING:
            return
        waiting.discard(part)
        if not waiting:
            del self._waiting[task.id]
            self._on_restored(task)

    def _close_task(self, task: Task, *, dirty: bool) -> None:
        if task.state is TaskState.RESTORING:
            self.restorer.remove(task)
            self._waiting.pop(task.id, None)
        for name in task.tables:
            self.tables.remove(f"{task.id}/{name}")
        task.close(dirty=dirty)

    def _on_restored(self, task: Task) -> None:
        """Stores caught up: start the input at the first offset the state does not hold."""
        task.restored()
        for name in task.stores:
            self.metrics.restore_remaining.labels(name, str(task.partition)).set(0)
        if self.progress_bar is not None and not self.restorer.busy:
            self.progress_bar.finish("restore complete")
        self._last_activity = time.monotonic()
        try:
            target = self._start_input(task)
        except KafkaException as exc:
            # found by the fault campaign, each killing the worker: after a broker restart
            # committed() can fail (NOT_COORDINATOR); when a revocation races the end of the
            # restore, the partition's fetcher has stopped and seek() fails (_STATE). Start
            # over from the committed state, as after a failed checkpoint (the loop does it at
            # a safe point); a revoked task then goes with its callback.
            self._failed_start = CheckpointFailed(
                f"cannot start task {task.id}: {exc.args[0].str()}", fatal=False)
            return
        log.info("task running", extra={"task": task.id, "topic": task.topic,
                                        "partition": task.partition,
                                        "offset": target if target >= 0 else None})

    def _start_input(self, task: Task) -> int:
        """Seek the task's input to the first offset its state does not hold and resume it."""
        tp = TopicPartition(task.topic, task.partition)
        start = task.start_position()
        committed = self.consumer.committed([tp], timeout=30)[0].offset
        if start is not None and start > committed:
            # the changelog is ahead of the group's commit (crash after the changelog write
            # under at-least-once): skip input whose effects are already in state and output
            target = start
            task.position = task.committed_position = start
        elif committed >= 0:
            target = task.position = task.committed_position = committed
        else:
            target = OFFSET_BEGINNING if self.config.auto_offset_reset == "earliest" else OFFSET_END
        # always seek: the paused partition must start exactly here, whatever was prefetched
        self.consumer.seek(TopicPartition(task.topic, task.partition, target))
        self.consumer.resume([tp])
        return target

    # -- lifecycle ----------------------------------------------------------------------------

    def _close_all(self, *, dirty: bool) -> None:
        for task in list(self.tasks.values()):
            self._close_task(task, dirty=dirty)
        self.tasks.clear()

    def stop(self, *_: Any) -> None:
        self._stopping = True

    def _setup(self) -> None:
        cfg = self.config
        admin = AdminClient(admin_config(cfg))
        self.collector.partitions.update(ensure_topics(
            admin, self.topology, create=cfg.create_topics,
            replication_factor=cfg.replication_factor,
            directory=directory_topic(self.topology.name) if cfg.metrics_port is not None else None,
            changelog_configs=cfg.changelog_topic_configs))
        try:
            self.producer = self._new_producer()
            self.consumer = Consumer(consumer_config(cfg, self.topology.name))
            restore_consumer, table_consumer = (Consumer(restore_consumer_config(cfg)),
                                                Consumer(restore_consumer_config(cfg)))
        except KafkaException as exc:  # e.g. a bad `kafka:` passthrough property: exit 2
            raise ProcessorError(f"cannot create the Kafka clients: {exc.args[0].str()} (check the "
                                 "`kafka:` / PROCESSOR_CONSUMER / PROCESSOR_PRODUCER properties and "
                                 "that the broker is reachable)") from None
        # a zombie's transaction on a changelog ends by its timeout (aborted by the broker)
        txn_timeout_ms = int(producer_config(cfg, "-").get("transaction.timeout.ms", 60_000))
        self.restorer = Restorer(restore_consumer, self._on_restored,
                                 open_txn_wait_s=txn_timeout_ms / 1000 + 30)
        self.restorer.hooks.append(lambda n: n and self.metrics.restore_records.inc(n))
        self.restorer.hooks.append(lambda n: n and faults.point("restore.chunk"))
        self.restorer.on_progress = self._restore_progress
        self.tables = TableFollower(table_consumer)
        self._start_global_tables()
        self.checkpointer = Checkpointer(self.producer, self.consumer,
                                         exactly_once=cfg.exactly_once, metrics=self.metrics,
                                         delivery_errors=self.delivery_errors)
        self.checkpointer.membership_doubt = self._membership_doubt
        self.checkpointer.on_committed = RepartitionPurger.for_topology(
            admin, self.topology, cfg.repartition_purge_interval_ms).committed_offsets
        self._subscribe()
        if cfg.metrics_port is not None:
            self._start_http(cfg.metrics_port)
        log.info("worker started", extra={
            "topology": self.topology.name, "worker_id": self.worker_id,
            "guarantee": cfg.processing_guarantee, "topics": self.topology.source_topics,
            "config": cfg.masked()})

    def _start_global_tables(self) -> None:
        """Global tables and broadcast sources: every partition on this worker, read to the end
        before the first record is processed (resuming from the local store's offsets), then
        followed as the loop turns."""
        topology = self.topology
        if not topology.global_tables and not topology.broadcasts:
            return
        for t in [*topology.global_tables, *topology.broadcasts]:
            store = self.global_stores[t.name] = TableStore(
                self.state_dir / topology.name / f"global-{t.name}")
            on_update = None
            if t.kind == "broadcast":
                self.broadcast.declare(t.name, self.serdes(t.end, True).decode,
                                       self.serdes(t.end, False).decode)
                self.broadcast.update(t.name, list(store.items()))  # what the last run read
                on_update = functools.partial(self._broadcast_update, t.name)
            partitions = list(range(self.collector.partitions[t.topic]))
            self.tables.add(f"global:{t.name}", t.topic, partitions, store, on_ready=lambda: None,
                            on_update=on_update)
        topology.broadcast.install(self.broadcast)
        self.tables.bootstrap(self.config.table_bootstrap_timeout_ms / 1000)

    def _broadcast_update(self, name: str, pairs: list[tuple[bytes, bytes | None]]) -> None:
        self.broadcast.update(name, pairs)
        log.info("broadcast state updated", extra={
            "source": name, "records": len(pairs), "version": self.broadcast.version[name],
            "keys": len(self.broadcast[name])})

    # -- HTTP: metrics, health, readiness, queryable state ------------------------------------

    def _start_http(self, port: int) -> None:
        cfg = self.config
        self.http = HttpServer(port, self.metrics.registry, health=self.health,
                               ready=self.readiness)
        url = cfg.advertised_url or f"http://{socket.gethostname()}:{self.http.port}"
        # plain (non-transactional) clients with the worker's security settings
        self.directory = WorkerDirectory(admin_config(cfg), self.topology.name,
                                         self.worker_id, url)
        stores = {s.name: sub.source.topic for sub in self.topology.subtopologies for s in sub.stores}
        queries = StateQueries(lambda: dict(self.tasks), stores, self.collector.partitions,
                               self.worker_id, self.directory)
        self.http.state = queries.get
        self.http.start()

    def health(self) -> tuple[int, dict[str, Any]]:
        """Alive while the loop turns; a stuck loop (a hung call, a deadlock) fails it."""
        idle = time.monotonic() - self.heartbeat
        ok = idle * 1000 < self.config.liveness_timeout_ms
        return (200 if ok else 503), {"status": "ok" if ok else "stuck",
                                      "seconds_since_loop": round(idle, 3)}

    def readiness(self) -> tuple[int, dict[str, Any]]:
        """Ready once the group has assigned partitions and every task has restored."""
        restoring = sorted(t.id for t in list(self.tasks.values()) if t.state is TaskState.RESTORING)
        ready = self._assigned_once and not restoring and not self._stopping
        reason = ("stopping" if self._stopping else f"restoring {len(restoring)} task(s)"
                  if restoring else "waiting for an assignment" if not self._assigned_once
                  else "processing")
        return (200 if ready else 503), {"ready": ready, "reason": reason,
                                         "tasks": len(self.tasks), "restoring": restoring}

    def _restore_progress(self, progress: list[tuple[str, int, int, int | None]]) -> None:
        gauge = self.metrics.restore_remaining
        for store, partition, restored, total in progress:
            gauge.labels(store, str(partition)).set(max(0, (total or restored) - restored))
        if self.progress_bar is not None:
            done = sum(p[2] for p in progress)
            total = sum(p[3] or p[2] for p in progress)
            self.progress_bar.update(done, total, f"({len(progress)} store partitions)")

    def _publish_assignment(self) -> None:
        if self.directory is None:
            return
        assignment: dict[str, list[int]] = {}
        for topic, partition in self.tasks:
            assignment.setdefault(topic, []).append(partition)
        try:
            self.directory.publish(assignment)
        except Exception as exc:  # the state API degrades; processing must not
            log.warning("cannot publish to the worker directory", extra={"error": str(exc)})

    def _discard_uncommitted(self, *, fatal: bool) -> None:
        """Close every task dirty. Under exactly-once also replace the producer: the new one's
        init_transactions aborts the open transaction (or fences a zombie), which works even
        when the old producer is broken — an abort_transaction on a fenced producer would only
        block until its timeout."""
        self._close_all(dirty=True)
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

    def _recover(self, exc: CheckpointFailed) -> None:
        """A failed or fenced transaction (a rebalance bumped the group generation, another
        producer took the transactional id, the member was kicked out while stopped): drop the
        uncommitted work of every task and reopen them at the committed offsets. The group
        membership stays: if this member lost its partitions, the consumer's lost callback
        follows and the group hands them out afresh."""
        log.error("checkpoint failed; closing tasks dirty and reopening them",
                  extra={"error": str(exc), "fatal": exc.fatal})
        self._reset_tasks(self.consumer, gone=[], fatal=exc.fatal)

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

    def _subscribe(self) -> None:
        self.consumer.subscribe(self.topology.source_topics, on_assign=self._on_assign,
                                on_revoke=self._on_revoke, on_lost=self._on_lost)

    def run(self) -> int:
        """Run until SIGTERM/SIGINT (or idle, in bounded mode). Returns the exit code."""
        self._setup()
        _tune_gc()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.stop)
        cfg = self.config
        interval = cfg.commit_interval_ms / 1000
        poll_timeout = cfg.poll_timeout_ms / 1000
        next_checkpoint = time.monotonic() + interval
        consumed = self.metrics.records_consumed
        try:
            while not self._stopping:
                self.heartbeat = time.monotonic()
                if self.restorer.busy:
                    self.restorer.step(cfg.restore_batch_size, 0.05)
                self.tables.step(cfg.restore_batch_size, 0)  # table and broadcast updates
                if self._failed_start is not None:
                    failed, self._failed_start = self._failed_start, None
                    self._recover(failed)
                if self._unstable:
                    self._restore_when_stable()
                restoring = self.restorer.busy or self.tables.busy
                msgs = self.consumer.consume(cfg.batch_size, 0 if restoring else poll_timeout)
                if msgs:
                    started = time.perf_counter()
                    try:
                        self._dispatch(msgs, consumed)
                    except Exception as exc:
                        self._produce_failed(exc)
                        continue
                    self._last_activity = time.monotonic()
                    self.metrics.processing_latency.observe(time.perf_counter() - started)
                    faults.point("batch.processed")
                now = time.monotonic()
                if now >= next_checkpoint:
                    self._tick(now)
                    self._checkpoint()
                    next_checkpoint = now + interval
                    self._maybe_log_progress(now)
                if self.stop_when_idle_ms is not None and self._idle(now - self._last_activity):
                    if self._group_drained():
                        log.info("idle: stopping bounded run",
                                 extra={"records": self.records_processed})
                        break
                    self._last_activity = now  # look again after another idle period
            self._checkpoint()
        finally:
            self._shutdown()
        return 0

    def _maybe_log_progress(self, now: float, every_s: float = 10.0) -> None:
        """A progress line every ten seconds: totals, rate, task states, per-task offsets."""
        last_t, last_n = self._progress_mark
        if now - last_t < every_s:
            return
        if not self._assigned_once:
            hint = ("a broker without KIP-848 (Apache Kafka < 4.0, Tansu: dev-broker's default) "
                    "never answers group_protocol consumer: set group_protocol: classic "
                    "(PROCESSOR_GROUP_PROTOCOL=classic)" if self.config.group_protocol == "consumer"
                    else "is another member still holding the partitions?")
            log.warning("waiting for an assignment", extra={
                "waited_s": round(now - self._started_at), "group_protocol":
                self.config.group_protocol, "hint": hint})
        self._progress_mark = (now, self.records_processed)
        log.info("progress", extra={
            "records": self.records_processed,
            "records_per_s": round((self.records_processed - last_n) / (now - last_t)),
            "tasks_running": sum(t.state is TaskState.RUNNING for t in self.tasks.values()),
            "tasks_restoring": sum(t.state is TaskState.RESTORING for t in self.tasks.values()),
            "offsets": {f"{t.topic}[{t.partition}]": t.committed_position
                        for t in self.tasks.values()}})

    def _idle(self, idle_s: float) -> bool:
        assert self.stop_when_idle_ms is not None
        return (bool(self.tasks) and not self.restorer.busy and not self._unstable
                and idle_s * 1000 >= self.stop_when_idle_ms)

    def _group_drained(self) -> bool:
        """Every input partition of the group is processed, including those still held by a
        crashed member whose session has not expired (runtime/drain.py)."""
        if self._drain_probe is None:
            self._drain_probe = Consumer(restore_consumer_config(self.config))
        left = undrained(self.consumer, self._drain_probe, self.topology.source_topics,
                         earliest=self.config.auto_offset_reset == "earliest")
        if left:
            log.info("idle, but the group has input left (another member owns it, or owned it "
                     "and crashed): not stopping yet", extra={"partitions": left})
        return not left

    def _dispatch(self, msgs: list[Any], consumed: Any) -> None:
        by_tp: dict[TP, list[Any]] = {}
        for m in msgs:
            if m.error() is not None:
                err = m.error()
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                if err.fatal():
                    raise KafkaException(err)
                log.warning("consumer error", extra={"error": err.str()})
                continue
            tp = (m.topic(), m.partition())
            lst = by_tp.get(tp)
            if lst is None:
                by_tp[tp] = lst = []
            lst.append(m)
        for tp, batch in by_tp.items():
            task = self.tasks.get(tp)
            if task is None or task.state is not TaskState.RUNNING:
                continue  # fetched before a revoke/pause took effect; will be re-read
            task.process(batch)
            consumed.labels(tp[0]).inc(len(batch))
            self.records_processed += len(batch)
            ts = task.last_time
            if ts > 0:
                self.metrics.end_to_end_latency.observe(max(0.0, time.time() - ts / 1000))

    def _tick(self, now: float) -> None:
        """Idle input partitions and processing-time timers: time passing without records."""
        now_ms = int(time.time() * 1000)
        try:
            for task in self.tasks.values():
                task.tick(now_ms, now)
        except Exception as exc:
            self._produce_failed(exc)

    def _produce_failed(self, exc: Exception) -> None:
        """The producer failed mid-batch (fenced, fatal): the same path as a failed commit.
        Anything that is not a Kafka error is a bug and propagates."""
        err = kafka_error(exc)
        if err is None:
            raise exc
        self._recover(CheckpointFailed(f"produce failed: {err.str()}", fatal=is_fatal(err)))

    def _checkpoint(self) -> None:
        try:
            self.checkpointer.checkpoint(list(self.tasks.values()))
        except CheckpointFailed as exc:
            self._recover(exc)
        produced = self.collector.produced
        for topic, n in produced.items():
            self.metrics.records_produced.labels(topic).inc(n)
        produced.clear()
        for task in self.tasks.values():
            if task.failures:
                for (policy, step, error), n in task.failures.items():
                    counter = (self.metrics.dead_letters if policy == "dlq"
                               else self.metrics.skipped_records)
                    counter.labels(task.topic, step, error).inc(n)
                task.failures.clear()
            if task.late_records:
                self.metrics.late_records.labels(task.topic).inc(task.late_records)
                task.late_records = 0
            if task.clock.current != NO_WATERMARK:
                self.metrics.watermark.labels(task.topic, str(task.partition)).set(
                    task.clock.current / 1000)
        self._observe_partitions()
        for state in TaskState:
            self.metrics.tasks.labels(state.value).set(
                sum(1 for t in self.tasks.values() if t.state is state))

    def _observe_partitions(self, every_s: float = 5.0) -> None:
        """Consumer lag per input partition (from the last fetch: no broker call) and local
        store sizes (RocksDB's estimates), every few seconds."""
        now = time.monotonic()
        if now - self._observed_at < every_s:
            return
        self._observed_at = now
        owned = {(topic, str(partition)) for topic, partition in self.tasks}
        for labels in self._lag_labels - owned:  # revoked: no stale lag series
            self.metrics.consumer_lag.remove(*labels)
        self._lag_labels &= owned
        for (topic, partition), task in list(self.tasks.items()):
            if task.state is not TaskState.RUNNING or task.position is None:
                continue
            try:
                _, high = self.consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                              cached=True)
            except KafkaException:
                continue
            if high is not None and high >= 0:
                self.metrics.consumer_lag.labels(topic, str(partition)).set(max(0, high - task.position))
                self._lag_labels.add((topic, str(partition)))
            for name, store in task.stores.items():
                keys, size = store.stats()
                self.metrics.state_keys.labels(name, str(partition)).set(keys)
                self.metrics.state_bytes.labels(name, str(partition)).set(size)

    def _shutdown(self) -> None:
        log.info("worker stopping", extra={"records": self.records_processed})
        try:
            self.consumer.close()  # leaves the group; on_revoke checkpoints and closes tasks
        except KafkaException as exc:
            log.warning("consumer close failed", extra={"error": exc.args[0].str()})
        self._close_all(dirty=False)
        self.restorer.consumer.close()
        if self._drain_probe is not None:
            self._drain_probe.close()
        self.tables.close()
        for store in self.global_stores.values():
            store.close()
        try:
            self.producer.flush(30)
        except Exception as exc:
            if kafka_error(exc) is None:
                raise
            log.warning("producer flush on shutdown failed", extra={"error": str(exc)})
        if self.directory is not None:
            try:
                self.directory.withdraw()
            except Exception as exc:
                log.warning("cannot withdraw from the worker directory", extra={"error": str(exc)})
        if self.http is not None:
            self.http.stop()
        log.info("worker stopped", extra={"records": self.records_processed})


def _tune_gc() -> None:
    """Batches allocate tens of thousands of short-lived tuples and dicts; with CPython's
    default threshold (700) the young generation is collected every few records and the older
    ones far too often (a stream-table join measured 3.9 µs per record with the default, 2.0 µs
    with this). Records rarely form cycles, so collect less often, and move everything built at
    start-up (topology, compiled code, clients) out of the collector's sight."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def _fmt(partitions: list[TopicPartition]) -> list[str]:
    return [f"{p.topic}[{p.partition}]" for p in partitions]
