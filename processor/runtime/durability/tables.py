"""Materialize table, global-table and broadcast sources from their topics, and keep following.

A table has no changelog: its (compacted) source topic is the log. One group-less consumer per
worker reads every registered table partition from the offset recorded in its TableStore
(else the beginning) and never stops at the end: after the first partition EOF (bootstrap
complete, `on_ready`) it keeps applying updates as the worker loop calls `step`. Each chunk of
a registration is written in one RocksDB batch with the next offsets, so a crash resumes where
the store stopped and a restart reads only what is new.

The same (topic, partition) may be followed by several registrations with their own stores
(two tasks of different sub-topologies joining one table): the partition is assigned once,
from the lowest offset any of them needs, and each record is applied to the registrations
that have not seen it yet.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from processor.errors import ProcessorError
from processor.runtime.kafka.batch import by_partition
from processor.state.table import TableStore

log = logging.getLogger("processor.tables")

Pairs = list[tuple[bytes, bytes | None]]
_TP = tuple[str, int]


class TableError(ProcessorError):
    """A table topic cannot be read, or was not read to its end in time."""


@dataclass(eq=False)
class _Registration:
    name: str
    topic: str
    partitions: list[int]
    store: TableStore
    on_ready: Callable[[], None]
    on_update: Callable[[Pairs], None] | None
    start: dict[int, int]       # next offset at registration (progress totals)
    next: dict[int, int]        # next offset not yet applied, per partition (0: none applied)
    pending: set[int]           # partitions that have not reached their first EOF
    started: float = field(default_factory=time.monotonic)
    records: int = 0
    null_keys: int = 0          # records without a key: a table cannot hold them

    @property
    def ready(self) -> bool:
        return not self.pending


@dataclass
class _Chunk:
    """What one `step` applies to one registration."""

    writes: dict[bytes, bytes | None] = field(default_factory=dict)
    pairs: Pairs = field(default_factory=list)
    offsets: dict[int, int] = field(default_factory=dict)


class TableFollower:
    """Follows registered table partitions with one assign()-only consumer (see module doc)."""

    def __init__(self, consumer: Consumer, progress_interval_s: float = 5.0) -> None:
        self.consumer = consumer
        self.progress_interval_s = progress_interval_s
        self._regs: dict[str, _Registration] = {}
        self._by_tp: dict[_TP, list[_Registration]] = {}
        self._unready: set[str] = set()
        self._last_log = time.monotonic()
        self._error_logged = 0.0

    # -- registrations ------------------------------------------------------------------------

    def add(self, name: str, topic: str, partitions: list[int], store: TableStore,
            on_ready: Callable[[], None],
            on_update: Callable[[Pairs], None] | None = None) -> None:
        """Follow `partitions` of `topic` into `store` from its recorded offsets; `on_ready()`
        once all of them reached their end for the first time, `on_update(pairs)` with every
        applied chunk's raw (key, value) pairs in topic order (None value: tombstone)."""
        if name in self._regs:
            raise ValueError(f"table registration {name!r} exists already")
        stored = store.offsets()
        start = {p: stored.get(p, 0) for p in partitions}
        reg = _Registration(name, topic, list(partitions), store, on_ready, on_update,
                            start=dict(start), next=dict(start), pending=set(partitions))
        self._regs[name] = reg
        fresh, shared = [], []
        for p in reg.partitions:
            regs = self._by_tp.setdefault((topic, p), [])
            (shared if regs else fresh).append(p)
            regs.append(reg)
        log.info("table bootstrap started", extra={
            "registration": name, "topic": topic, "partitions": reg.partitions,
            "offsets": start, "shared": shared or None})
        if not reg.pending:  # nothing to read
            self._became_ready(reg)
            return
        self._unready.add(name)
        if shared:
            # already fetching for another registration, maybe past this store's offset and at
            # the end (no EOF would come until new data): restart from the lowest offset needed
            self.consumer.incremental_unassign([TopicPartition(topic, p) for p in shared])
        self.consumer.incremental_assign([self._assignment(topic, p) for p in fresh + shared])

    def _assignment(self, topic: str, p: int) -> TopicPartition:
        lowest = min(r.next[p] for r in self._by_tp[(topic, p)])
        return TopicPartition(topic, p, lowest if lowest > 0 else OFFSET_BEGINNING)

    def remove(self, name: str) -> None:
        """Stop following a registration (unknown names are ignored); its store stays open:
        the caller owns it. A partition is unassigned when no registration holds it."""
        reg = self._regs.pop(name, None)
        if reg is None:
            return
        self._unready.discard(name)
        gone = []
        for p in reg.partitions:
            tp = (reg.topic, p)
            regs = self._by_tp[tp]
            regs.remove(reg)
            if not regs:
                del self._by_tp[tp]
                gone.append(TopicPartition(reg.topic, p))
        if gone:
            self.consumer.incremental_unassign(gone)
        log.info("table unfollowed", extra={"registration": name, "topic": reg.topic,
                                            "partitions": reg.partitions, "ready": reg.ready,
                                            "records": reg.records, "offsets": dict(reg.next)})

    def ready(self, name: str) -> bool:
        """Has registration `name` reached the end of all its partitions once?"""
        reg = self._regs.get(name)
        if reg is None:
            raise KeyError(f"no table registration {name!r}")
        return reg.ready

    @property
    def busy(self) -> bool:
        """Some registration is still bootstrapping."""
        return bool(self._unready)

    # -- reading ------------------------------------------------------------------------------

    def step(self, max_records: int, timeout: float) -> int:
        """Consume one chunk and apply it; returns the records applied (to any registration).

        Costs one `consume` call when partitions are followed, nothing otherwise: the worker
        calls it every loop turn with timeout 0."""
        if not self._by_tp:
            return 0
        msgs = self.consumer.consume(max_records, timeout)
        if not msgs:
            if self._unready:
                self._maybe_log()
            return 0
        eofs: dict[_TP, int] = {}

        def on_error(m: Any, err: KafkaError) -> None:
            if err.code() == KafkaError._PARTITION_EOF:
                eofs[(m.topic(), m.partition())] = m.offset()
            else:
                self._error(m, err)

        by_tp = by_partition(msgs, on_error)

        work: dict[_Registration, _Chunk] = {}
        for tp, chunk in by_tp.items():
            regs = self._by_tp.get(tp)
            if regs:  # else: removed meanwhile
                self._fan_out(tp[1], chunk, regs, work)
        readied: list[_Registration] = []
        for (topic, p), end in eofs.items():
            for reg in self._by_tp.get((topic, p), ()):
                if end > reg.next[p]:
                    # transaction markers / compacted gaps: resume after them, not before
                    c = work.get(reg)
                    if c is None:
                        work[reg] = c = _Chunk()
                    c.offsets[p] = max(c.offsets.get(p, 0), end)
                elif end < reg.next[p] and p in reg.pending:
                    log.warning("table topic ends before the store's offset", extra={
                        "registration": reg.name, "topic": topic, "partition": p,
                        "end": end, "offset": reg.next[p],
                        "hint": "was the topic deleted and re-created? wipe the store"})
                if p in reg.pending:
                    reg.pending.discard(p)
                    if not reg.pending:
                        readied.append(reg)

        applied = 0
        for reg, c in work.items():
            reg.store.apply(c.writes, c.offsets)
            reg.next.update(c.offsets)
            reg.records += len(c.pairs)
            applied += len(c.pairs)
            if c.pairs and reg.on_update is not None:
                reg.on_update(c.pairs)
        for reg in readied:
            if self._regs.get(reg.name) is reg:  # not removed by a callback meanwhile
                self._became_ready(reg)
        if self._unready:
            self._maybe_log()
        return applied

    def _fan_out(self, p: int, chunk: list[Any], regs: list[_Registration],
                 work: dict[_Registration, _Chunk]) -> None:
        """Apply one partition's records to each registration that has not seen them."""
        offsets = [m.offset() for m in chunk]
        pairs = [(m.key(), m.value()) for m in chunk]
        end = offsets[-1] + 1
        for reg in regs:
            if end <= reg.next[p]:
                continue  # a re-read for another registration: all seen
            todo = pairs
            if offsets[0] < reg.next[p]:
                todo = pairs[bisect.bisect_left(offsets, reg.next[p]):]
            writes = dict(todo)
            if None in writes:  # keyless records: skip them, but count and say so
                del writes[None]
                n = len(todo)
                todo = [kv for kv in todo if kv[0] is not None]
                self._null_keys(reg, p, n - len(todo))
            c = work.get(reg)
            if c is None:
                work[reg] = _Chunk(writes, todo, {p: end})
            else:  # another partition of the same registration in this step
                c.writes.update(writes)
                c.pairs.extend(todo)
                c.offsets[p] = end

    def _null_keys(self, reg: _Registration, p: int, n: int) -> None:
        before = reg.null_keys
        reg.null_keys += n
        if before // 1000 != reg.null_keys // 1000 or before == 0:
            log.warning("table records without a key skipped", extra={
                "registration": reg.name, "topic": reg.topic, "partition": p,
                "skipped": reg.null_keys})

    def _error(self, m: Any, err: KafkaError) -> None:
        """Partition and fatal errors stop the worker (a table that silently stops following
        would join stale data); connection hiccups are the client's to retry."""
        topic = m.topic()
        if err.fatal() or (topic and not err.retriable()
                           and err.code() not in (KafkaError._TRANSPORT, KafkaError._TIMED_OUT)):
            where = f"{topic}[{m.partition()}]" if topic else "the cluster"
            raise TableError(f"reading table topic {where} failed: {err.str()}")
        now = time.monotonic()
        if now - self._error_logged > 10:
            self._error_logged = now
            log.warning("table consumer error (retrying)", extra={"error": err.str()})

    def _became_ready(self, reg: _Registration) -> None:
        self._unready.discard(reg.name)
        log.info("table bootstrap complete", extra={
            "registration": reg.name, "topic": reg.topic, "partitions": reg.partitions,
            "records": reg.records, "offsets": dict(reg.next),
            "seconds": round(time.monotonic() - reg.started, 3)})
        reg.on_ready()

    # -- bootstrap ------------------------------------------------------------------------

    def bootstrap(self, timeout_s: float, max_records: int = 50_000) -> None:
        """Read until every registration is ready (global tables and broadcasts, before the
        worker processes its first record); TableError naming what is behind on timeout."""
        deadline = time.monotonic() + timeout_s
        while self._unready:
            if time.monotonic() > deadline:
                raise TableError(f"table bootstrap timed out after {timeout_s:g}s: "
                                 + "; ".join(self._behind()))
            self.step(max_records, 0.1)

    def _end(self, topic: str, p: int) -> int | None:
        """The partition's end offset from the last fetch response (no broker call)."""
        try:
            _, high = self.consumer.get_watermark_offsets(TopicPartition(topic, p), cached=True)
        except KafkaException:  # not known yet
            return None
        return high if high >= 0 else None

    def _behind(self) -> list[str]:
        out = []
        for name in sorted(self._unready):
            reg = self._regs[name]
            parts = []
            for p in sorted(reg.pending):
                end = self._end(reg.topic, p)
                parts.append(f"{p} at offset {reg.next[p]} of {end if end is not None else '?'}")
            out.append(f"topic {reg.topic!r} ({name}) partitions {sorted(reg.pending)} still "
                       f"behind: {', '.join(parts)}")
        return out

    def progress(self) -> list[tuple[str, str, int, int | None]]:
        """(registration, topic, records applied, records to read or None) per registration
        still bootstrapping; totals from cached watermarks."""
        out = []
        for name in sorted(self._unready):
            reg = self._regs[name]
            total: int | None = 0
            for p in reg.partitions:
                end = self._end(reg.topic, p)
                if end is None:
                    total = None
                    break
                total += max(0, end - reg.start[p])  # type: ignore[operator]
            out.append((name, reg.topic, reg.records, total))
        return out

    def _maybe_log(self) -> None:
        now = time.monotonic()
        if now - self._last_log < self.progress_interval_s:
            return
        self._last_log = now
        for name, topic, records, total in self.progress():
            log.info("table bootstrapping", extra={
                "registration": name, "topic": topic, "records": records, "total": total,
                "percent": round(100 * min(records, total) / total, 1) if total else None})

    def status(self) -> dict[str, dict[str, Any]]:
        """Per registration: topic, partitions, ready, records applied, next offsets."""
        return {name: {"topic": r.topic, "partitions": r.partitions, "ready": r.ready,
                       "records": r.records, "offsets": dict(r.next)}
                for name, r in self._regs.items()}

    def close(self) -> None:
        """Close the consumer (not the stores: their owners close them)."""
        self._regs.clear()
        self._by_tp.clear()
        self._unready.clear()
        self.consumer.close()
