"""`processor dlq inspect | replay`: read a topology's dead-letter topic; put letters back.

Replay produces each dead letter's original key, value and headers to the topic it was read
from (or `--to`), in the partition it came from, with its original timestamp. Progress is
the committed offset of the consumer group `<topology>-dlq-replay`, committed in the same
transaction as the re-injected records: a replay interrupted at any point and run again
neither skips nor repeats a letter. A letter whose source is a repartition topic is re-wrapped
with a fresh replay mark, since the reading task drops envelopes it has already seen. A letter
that failed at a step carries `processor.replay.step`: the task sends it down that step's
pipeline only, past no sink before the step, so the pipelines that had it get no duplicate.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

from processor.errors import ProcessorError
from processor.graph import Topology
from processor.runtime.config import WorkerConfig
from processor.runtime.durability.checkpoint import CheckpointFailed, send_offsets
from processor.runtime.kafka import deadletter as dl
from processor.runtime.kafka.clients import admin_config, consumer_config, producer_config
from processor.runtime.kafka.produce import produce_when_room
from processor.runtime.kafka.topics import partition_counts, read_to_end

REPLAY_PARTITION = -1  # the upstream partition of replayed repartition records (runtime/tasks/task.py marks)
COMMIT_EVERY = 5000
_NO_DLQ = ("does not exist: no record has failed under on_error: dlq yet, or the topology "
           "names another dead-letter topic")


@dataclass
class ReplayReport:
    replayed: Counter[str] = field(default_factory=Counter)  # target topic -> records
    filtered: int = 0  # another error class than asked for
    not_replayable: int = 0  # derived results: no original bytes to put back
    examined: int = 0


def _reader(config: WorkerConfig, topology: Topology, group: str | None) -> Consumer:
    conf = consumer_config(config, group or f"{topology.name}-dlq-inspect")
    conf.update({"enable.auto.commit": False, "auto.offset.reset": "earliest",
                 "enable.partition.eof": True})
    return Consumer(conf)


def inspect(topology: Topology, config: WorkerConfig, *, limit: int | None = None,
            error_class: str | None = None, as_json: bool = False, out: TextIO = sys.stdout) -> int:
    """Print dead letters readably (or one JSON object per line); returns how many."""
    consumer = _reader(config, topology, None)
    shown = 0
    try:
        for m in read_to_end(consumer, topology.dlq_topic, missing=_NO_DLQ):
            h = dl.header_map(m.headers())
            if error_class and h.get(dl.ERROR_CLASS) != error_class:
                continue
            print(_render(m, h, as_json), file=out)
            shown += 1
            if limit is not None and shown >= limit:
                break
    finally:
        consumer.close()
    if not as_json:
        print(f"{shown} dead letter{'s' if shown != 1 else ''} in {topology.dlq_topic}", file=out)
    return shown


def _text(data: bytes | None, limit: int = 300) -> str:
    if data is None:
        return "null"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return f"<{len(data)} bytes> {data[:64].hex()}{'...' if len(data) > 64 else ''}"
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def _render(m: Any, h: dict[str, str], as_json: bool) -> str:
    when = h.get(dl.ERROR_TIME)
    at = (datetime.fromtimestamp(int(when) / 1000, UTC).isoformat(timespec="seconds")
          if when and when.isdigit() else "?")
    if as_json:
        return orjson.dumps({"dlq_partition": m.partition(), "dlq_offset": m.offset(),
                             "failed_at": at, "headers": h, "key": _text(m.key(), 10_000),
                             "value": _text(m.value(), 10_000)}).decode()
    source = (f"{h.get(dl.SOURCE_TOPIC)}[{h.get(dl.SOURCE_PARTITION)}]@{h.get(dl.SOURCE_OFFSET)}")
    return (f"{m.topic()}[{m.partition()}]@{m.offset()}  {at}  {h.get(dl.ERROR_CLASS)}  "
            f"step {h.get(dl.ERROR_STEP)}  from {source}  ({h.get(dl.PAYLOAD)})\n"
            f"  error: {h.get(dl.ERROR_MESSAGE)}\n"
            f"  key:   {_text(m.key())}\n"
            f"  value: {_text(m.value())}")


def replay(topology: Topology, config: WorkerConfig, *, error_class: str | None = None,
           to: str | None = None, from_beginning: bool = False, dry_run: bool = False,
           out: TextIO = sys.stdout) -> ReplayReport:
    """Re-inject dead letters (see the module docstring)."""
    group = f"{topology.name}-dlq-replay"
    consumer = _reader(config, topology, group)
    from confluent_kafka.admin import AdminClient

    counts = partition_counts(AdminClient(admin_config(config)))
    internal = {s.source.topic for s in topology.subtopologies if s.source.internal}
    producer = None
    if not dry_run:
        producer = Producer(producer_config(config, f"{group}-{config.resolved_worker_id()}"))
        producer.init_transactions(30)
        producer.begin_transaction()
    report = ReplayReport()
    replay_id = int(time.time() * 1000)  # marks of replayed repartition records grow per run
    in_txn = 0
    done: dict[int, int] = {}  # DLQ partition -> next offset to examine
    try:
        for m in read_to_end(consumer, topology.dlq_topic, from_committed=not from_beginning,
                             missing=_NO_DLQ):
            report.examined += 1
            h = dl.header_map(m.headers())
            if error_class and h.get(dl.ERROR_CLASS) != error_class:
                report.filtered += 1
            elif h.get(dl.PAYLOAD) != "source" and to is None:
                report.not_replayable += 1
            else:
                target = to or h[dl.SOURCE_TOPIC]
                value = m.value()
                if target in internal and value is not None:
                    envelope = orjson.loads(value)
                    value = orjson.dumps([REPLAY_PARTITION, replay_id, report.replayed[target],
                                          envelope[-1]])
                report.replayed[target] += 1
                if producer is not None:
                    _put_back(producer, m, h, target, value, counts, to is None)
                    in_txn += 1
            done[m.partition()] = m.offset() + 1
            if producer is not None and in_txn >= COMMIT_EVERY:
                _commit(producer, consumer, topology.dlq_topic, done)
                in_txn = 0
                print(f"replayed {sum(report.replayed.values())} of {report.examined} examined",
                      file=out, flush=True)
        if producer is not None and done:
            _commit(producer, consumer, topology.dlq_topic, done)
    except BaseException:
        if producer is not None:
            producer.abort_transaction(30)
        raise
    finally:
        consumer.close()
    return report


def _put_back(producer: Producer, m: Any, h: dict[str, str], target: str, value: bytes | None,
              counts: dict[str, int], same_partition: bool) -> None:
    headers = [(k, v) for k, v in (m.headers() or []) if not k.startswith(dl.PREFIX)]
    headers.append((dl.REPLAYED_FROM, f"{m.topic()}[{m.partition()}]@{m.offset()}".encode()))
    step = h.get(dl.ERROR_STEP, "source")
    if same_partition and step != "source":
        # the task sends it down the failed step's pipeline only: the others had it already
        headers.append((dl.REPLAY_STEP, step.encode()))
    kwargs: dict[str, Any] = {"headers": headers}
    ts = h.get(dl.SOURCE_TIMESTAMP, "")
    if ts.isdigit() and int(ts) > 0:
        kwargs["timestamp"] = int(ts)
    part = h.get(dl.SOURCE_PARTITION, "")
    if same_partition and part.isdigit() and int(part) < counts.get(target, 0):
        kwargs["partition"] = int(part)
    produce_when_room(producer, target, value, m.key(), **kwargs)


def _commit(producer: Producer, consumer: Consumer, topic: str, done: dict[int, int]) -> None:
    """Letters so far and the group's progress past them, atomically."""
    positions = [TopicPartition(topic, p, o) for p, o in done.items()]
    try:  # with a deadline: librdkafka 2.16 can hang here past its own timeout
        send_offsets(producer, positions, consumer.consumer_group_metadata())
    except CheckpointFailed as exc:
        raise ProcessorError(f"replay stopped, nothing of this batch committed: {exc}; run it "
                             "again to resume after the last committed batch") from None
    producer.commit_transaction(30)
    producer.begin_transaction()
