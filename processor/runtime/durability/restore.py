"""Bring restoring tasks' stores up to date from their changelog topics.

One group-less consumer per worker reads the changelog partitions of every restoring task
from the offset recorded in each local store to the end (partition EOF), in chunks, so the
main loop keeps polling the group and running the tasks that are already live. Each chunk is
written in one RocksDB batch together with the next changelog offset: a crash during restore
resumes where it stopped.

Under read_committed, EOF comes at the last stable offset (LSO). An open transaction on a
changelog partition (only a zombie's: the task's previous owner, kicked out of the group while
stopped or cut off, whose transaction is not over) hides its own writes *and every committed
write behind it* — e.g. the next owner's, if the task moved on again meanwhile. Stopping there
and then starting the input at the group's committed offset would skip input whose state
changes were never restored (records lost; found by the fault campaign). So a store is restored
only once its EOF reaches the high watermark: the transaction committed (its writes are read)
or aborted, which the broker does at the latest at the transaction timeout; past
`open_txn_wait_s` the restore gives up waiting and says so.

A local store is only a prefix of *its* changelog topic. After `processor reset` deleted and
re-created the changelogs, a worker on another machine still holds its old stores, whose
recorded offsets point into the old topic: restoring the new one from there, or keeping the
old state, would be wrong without a sound. So, as Kafka Streams does with corrupted task state,
a store is cleared and restored from the beginning when (1) the changelog's topic id (KIP-516,
`changelog_identities`) differs from the one the store recorded, or (2) the changelog ends
below the store's offset (the consumer's `auto.offset.reset` took it back to the start, or the
partition ends before it), each with a warning naming task, store and partition. A store
records the id of the changelog it restores from before it reads or writes a record of it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from processor.runtime.kafka.batch import by_partition
from processor.runtime.kafka.topics import topic_ids
from processor.runtime.tasks.task import Task
from processor.state import LAYOUT_KEY, POSITION_KEY, RocksStore, decode_position
from processor.state.store import META_CHANGELOG_ID, META_CHANGELOG_OFFSET, META_LAYOUT

log = logging.getLogger("processor.restore")
def changelog_identities(admin: AdminClient, topics: list[str],
                         timeout: float = 10.0) -> dict[str, str]:
    """The topic id of each changelog topic that has one; a broker that gives none (or fails
    to answer) leaves the guard to the offset check alone."""
    def unanswered(topic: str, exc: KafkaException) -> None:
        log.warning("no topic id for a changelog: re-created topics are detected by their "
                    "end offset only", extra={"topic": topic, "error": exc.args[0].str()})
    return topic_ids(admin, topics, timeout, on_error=unanswered)


def stale_reason(*, recorded_id: str | None, current_id: str | None, start: int,
                 seen: int | None = None) -> str | None:
    """Why a local store cannot continue from its checkpoint, or None. `start`: the store's
    changelog offset; `seen`: the first offset the changelog delivered (a record's, or the EOF
    offset of an empty read), None before anything was read."""
    if recorded_id is not None and current_id is not None and recorded_id != current_id:
        return (f"the changelog topic was re-created (topic id {current_id}, the store's "
                f"{recorded_id})")
    if seen is not None and seen < start:
        return f"the changelog ends before the store's offset {start} (read from {seen})"
    return None


@dataclass
class _Progress:
    task: Task
    store: str
    start: int
    restored: int = 0


@dataclass
class Restorer:
    consumer: Consumer
    on_restored: Callable[[Task], None]
    progress_interval_s: float = 5.0
    active: dict[tuple[str, int], _Progress] = field(default_factory=dict)
    waiting: dict[str, int] = field(default_factory=dict)  # task id -> stores still restoring
    _last_log: float = 0.0
    hooks: list[Callable[[int], None]] = field(default_factory=list)
    # called after every chunk with (store, partition, restored, total or None) per store
    # partition still restoring: the worker's gauges and the CLI's progress bar
    on_progress: Callable[[list[tuple[str, int, int, int | None]]], None] | None = None
    open_txn_wait_s: float = 120.0
    # changelog topic -> topic id (changelog_identities); a topic missing here is unchecked
    changelog_ids: dict[str, str] = field(default_factory=dict)
    # store partitions at EOF behind an open transaction: (waiting since, EOF offset)
    blocked: dict[tuple[str, int], tuple[float, int]] = field(default_factory=dict)

    def add(self, task: Task) -> None:
        """Start restoring all stores of a task.

        Every store reads to partition EOF, even when it looks up to date: the end offset a
        broker reports for a changelog is not trustworthy everywhere (under read_committed
        it must be the last stable offset; some Kafka-compatible brokers report less).
        """
        pending = []
        for name, store in task.stores.items():
            topic = task.changelogs[name]
            current = self.changelog_ids.get(topic)
            why = stale_reason(recorded_id=store.changelog_id, current_id=current,
                               start=store.changelog_offset)
            if why is not None:
                self._clear(task, name, task.partition, why)
            if current is not None and store.changelog_id != current:
                store.apply({}, {META_CHANGELOG_ID: current.encode()})
            start = store.changelog_offset or OFFSET_BEGINNING
            pending.append(TopicPartition(topic, task.partition, start))
            self.active[(topic, task.partition)] = _Progress(task, name, max(start, 0))
        self.waiting[task.id] = len(pending)
        log.info("restore started", extra={
            "task": task.id, "partition": task.partition,
            "changelogs": {tp.topic: max(tp.offset, 0) for tp in pending}})
        self.consumer.incremental_assign(pending)

    def remove(self, task: Task) -> None:
        """Stop restoring a task (revoked before it finished)."""
        gone = [k for k, p in self.active.items() if p.task is task]
        if gone:
            self.consumer.incremental_unassign([TopicPartition(t, p) for t, p in gone])
        for k in gone:
            del self.active[k]
            self.blocked.pop(k, None)
        self.waiting.pop(task.id, None)

    @property
    def busy(self) -> bool:
        return bool(self.active)

    def step(self, max_records: int, timeout: float) -> int:
        """Consume one chunk of changelog records and apply it; returns records applied."""
        if not self.active:
            return 0
        msgs = self.consumer.consume(max_records, timeout)
        finished: list[tuple[tuple[str, int], int]] = []

        def on_error(m: Any, err: KafkaError) -> None:
            key = (m.topic(), m.partition())
            if err.code() != KafkaError._PARTITION_EOF:
                raise RuntimeError(f"restore read failed on {key}: {err.str()}")
            finished.append((key, m.offset()))

        chunks = by_partition(msgs, on_error)
        applied = 0
        for key, chunk in chunks.items():
            prog = self.active.get(key)
            if prog is not None:
                applied += self._apply(prog, chunk)
        for key, end in finished:
            prog = self.active.get(key)
            if prog is not None and not self._behind_open_transaction(key, end):
                if prog.restored == 0 and (why := stale_reason(
                        recorded_id=None, current_id=None, start=prog.start, seen=end)):
                    self._clear(prog.task, prog.store, key[1], why)
                    prog.start = 0
                self._finish(key, prog, end)
        self._give_up_waiting()
        for hook in self.hooks:
            hook(applied)
        progress = self.progress()
        if self.on_progress is not None:
            self.on_progress(progress)
        self._maybe_log(progress)
        return applied

    def _behind_open_transaction(self, key: tuple[str, int], end: int) -> bool:
        """EOF below the high watermark of the same fetch: a transaction is open (see the
        module docstring). The partition stays assigned; its next EOF comes when it is over."""
        _, high = self.consumer.get_watermark_offsets(TopicPartition(*key), cached=True)
        if high is None or high <= end:
            self.blocked.pop(key, None)
            return False
        if key not in self.blocked:
            log.warning("restore waits for an open transaction on the changelog", extra={
                "topic": key[0], "partition": key[1], "last_stable_offset": end,
                "high_watermark": high})
        self.blocked[key] = (self.blocked.get(key, (time.monotonic(), end))[0], end)
        return True

    def _give_up_waiting(self) -> None:
        now = time.monotonic()
        for key, (since, end) in list(self.blocked.items()):
            prog = self.active.get(key)
            if prog is None:
                del self.blocked[key]
            elif now - since > self.open_txn_wait_s:
                del self.blocked[key]
                log.error("restore stops at the last stable offset: a transaction on the "
                          "changelog stayed open past the transaction timeout", extra={
                              "topic": key[0], "partition": key[1], "offset": end})
                self._finish(key, prog, end)

    def progress(self) -> list[tuple[str, int, int, int | None]]:
        """(store, partition, restored, total) of each store partition still restoring; the
        total comes from the last fetch response's end offset (no broker call)."""
        out = []
        for (topic, part), p in self.active.items():
            _, high = self.consumer.get_watermark_offsets(TopicPartition(topic, part), cached=True)
            total = max(1, high - p.start) if high and high > 0 else None
            out.append((p.store, part, p.restored, total))
        return out

    def _apply(self, prog: _Progress, chunk: list) -> int:
        if prog.restored == 0 and (why := stale_reason(
                recorded_id=None, current_id=None, start=prog.start, seen=chunk[0].offset())):
            # the consumer went back to the start (auto.offset.reset): replay into an empty store
            self._clear(prog.task, prog.store, chunk[0].partition(), why)
            prog.start = 0
        store: RocksStore = prog.task.stores[prog.store]
        writes: dict[bytes, bytes | None] = {}
        meta: dict[str, int | bytes] = {META_CHANGELOG_OFFSET: chunk[-1].offset() + 1}
        for m in chunk:
            k = m.key()
            if k == POSITION_KEY:
                meta.update(decode_position(m.value()))
            elif k == LAYOUT_KEY:
                meta[META_LAYOUT] = m.value()
            else:
                writes[k] = m.value()
        store.apply(writes, meta)
        prog.restored += len(chunk)
        return len(chunk)

    def _clear(self, task: Task, store: str, partition: int, why: str) -> None:
        log.warning("local store does not match its changelog: cleared, restoring from the "
                    "beginning", extra={"task": task.id, "store": store, "partition": partition,
                                        "reason": why})
        task.stores[store].clear()
        cid = self.changelog_ids.get(task.changelogs[store])
        if cid is not None:
            task.stores[store].apply({}, {META_CHANGELOG_ID: cid.encode()})

    def _finish(self, key: tuple[str, int], prog: _Progress, end: int) -> None:
        prog.task.stores[prog.store].apply({}, {META_CHANGELOG_OFFSET: end})
        del self.active[key]
        self.consumer.incremental_unassign([TopicPartition(*key)])
        left = self.waiting[prog.task.id] - 1
        log.info("store restored", extra={"task": prog.task.id, "store": prog.store,
                                          "partition": key[1], "records": prog.restored,
                                          "offset": end})
        if left:
            self.waiting[prog.task.id] = left
        else:
            del self.waiting[prog.task.id]
            self.on_restored(prog.task)

    def _maybe_log(self, progress: list[tuple[str, int, int, int | None]]) -> None:
        now = time.monotonic()
        if now - self._last_log < self.progress_interval_s:
            return
        self._last_log = now
        for store, part, restored, total in progress:
            log.info("restoring", extra={
                "store": store, "partition": part, "restored": restored, "total": total,
                "percent": round(100 * restored / total, 1) if total else None})
