"""Delete repartition records once their consumption is committed (DeleteRecords), as Kafka
Streams does, so repartition topics do not grow without bound.

Only offsets a checkpoint committed are purged: the checkpointer reports them after
`commit_transaction` returned (exactly_once) or after the offset commit (at_least_once).
Nothing reads a repartition topic below its group's committed offset: a task starts at the
larger of that offset and its changelog position (worker `_on_restored`; the position record
is written before the commit, so it is never behind it), and the envelopes' de-duplication
marks and the upstream watermarks travel in the position records, not in old repartition
records. So a purged prefix is never needed again.

Requests go out at most once per `repartition_purge_interval_ms`, at most one at a time, and
are not waited for: their results are read on the loop's thread at a later checkpoint. A
broker that cannot delete records (no DeleteRecords support, no permission) is reported once
and not asked again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from processor.graph import Topology
from processor.runtime import faults

log = logging.getLogger("processor.purge")

# errors that will not go away by asking again
UNSUPPORTED = frozenset({
    KafkaError.UNSUPPORTED_VERSION, KafkaError._UNSUPPORTED_FEATURE, KafkaError.INVALID_REQUEST,
    KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED,
})
# no answer at all: a network problem, or a broker that drops the connection on a request it
# does not implement (Tansu, the embedded broker, does so for DeleteRecords; the next request
# then finds no leader through the dropped connection: _NOENT)
NO_ANSWER = frozenset({KafkaError._TRANSPORT, KafkaError._TIMED_OUT, KafkaError._NOENT,
                       KafkaError._ALL_BROKERS_DOWN})
NO_ANSWER_LIMIT = 3  # requests in a row without an answer, and never a success: give up

TP = tuple[str, int]


def repartition_topics(topology: Topology) -> list[str]:
    return sorted({sub.source.topic for sub in topology.subtopologies if sub.source.internal})


class RepartitionPurger:
    """Remembers the committed offsets of repartition partitions and deletes the records
    below them every `interval_s` (0: after every checkpoint, once the last request is done)."""

    def __init__(self, admin: Any, topics: Iterable[str], interval_s: float, *,
                 clock: Callable[[], float] = time.monotonic,
                 request_timeout_s: float = 30.0) -> None:
        self.admin = admin  # an AdminClient (anything with its delete_records)
        self.topics = frozenset(topics)
        self.interval_s = interval_s
        self.clock = clock
        self.request_timeout_s = request_timeout_s
        self.enabled = bool(self.topics)
        self.committed: dict[TP, int] = {}  # latest committed offset per partition
        self.purged: dict[TP, int] = {}  # low watermark after our last successful delete
        self.in_flight: dict[TopicPartition, Future[Any]] = {}
        self.next_due = clock() + interval_s
        self._succeeded = False
        self._no_answer = 0

    @classmethod
    def for_topology(cls, admin: Any, topology: Topology, interval_ms: int) -> RepartitionPurger:
        return cls(admin, repartition_topics(topology), interval_ms / 1000)

    def committed_offsets(self, offsets: list[TopicPartition]) -> None:
        """A checkpoint committed `offsets` (empty: nothing to commit this time; a purge that
        is due still goes out, so an idle worker catches up). Never blocks; Kafka errors are
        logged, not raised: the checkpoint has already committed."""
        if not self.enabled:
            return
        for tp in offsets:
            if tp.topic in self.topics and tp.offset >= 0:
                self.committed[(tp.topic, tp.partition)] = tp.offset
        if self.in_flight:
            if not all(f.done() for f in self.in_flight.values()):
                return
            self._collect()
        now = self.clock()
        if not self.enabled or now < self.next_due:
            return
        due = [TopicPartition(t, p, o) for (t, p), o in sorted(self.committed.items())
               if o > self.purged.get((t, p), 0)]
        if not due:
            return
        self.next_due = now + self.interval_s
        try:
            self.in_flight = self.admin.delete_records(due, request_timeout=self.request_timeout_s)
        except KafkaException as exc:  # refused before it was sent
            self._failed(exc.args[0], due)

    def _collect(self) -> None:
        """Read the answers of the finished request (on the caller's thread)."""
        done, self.in_flight = self.in_flight, {}
        failed: dict[int, tuple[KafkaError, list[TopicPartition]]] = {}
        for tp, fut in done.items():
            exc = fut.exception()
            if exc is None:
                self.purged[(tp.topic, tp.partition)] = fut.result().low_watermark
                self._succeeded = True
                continue
            err = (exc.args[0] if isinstance(exc, KafkaException) and exc.args
                   and isinstance(exc.args[0], KafkaError)
                   else KafkaError(KafkaError._FAIL, str(exc)))
            failed.setdefault(err.code(), (err, []))[1].append(tp)
        if not failed:
            self._no_answer = 0
            log.debug("repartition records purged", extra={
                "offsets": {f"{tp.topic}[{tp.partition}]": tp.offset for tp in done}})
            faults.point("repartition.purged")  # tests: kill -9 right after a purge
            return
        for err, tps in failed.values():
            self._failed(err, tps)

    def _failed(self, err: KafkaError, tps: list[TopicPartition]) -> None:
        where = [f"{tp.topic}[{tp.partition}]@{tp.offset}" for tp in tps]
        code = err.code()
        self._no_answer = self._no_answer + 1 if code in NO_ANSWER else 0
        if code in UNSUPPORTED or (self._no_answer >= NO_ANSWER_LIMIT and not self._succeeded):
            self.enabled = False
            log.warning("repartition topics cannot be purged on this broker; not trying again "
                        "(they keep every record: they are created without time retention)",
                        extra={"error": err.str(), "partitions": where})
            return
        # no answer before any success may be a broker without DeleteRecords: it gets its
        # single warning when given up on
        quiet = code in NO_ANSWER and not self._succeeded
        log.log(logging.INFO if quiet else logging.WARNING,
                "repartition purge failed; retrying at the next interval",
                extra={"error": err.str(), "partitions": where})
