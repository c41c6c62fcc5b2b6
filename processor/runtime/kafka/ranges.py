"""A bounded source's range of its topic: per partition `[start, end)` offsets.

A `bounded:` source (spec/bounded.py) names its start and end as `earliest`, `latest`, a
timestamp or per-partition offsets; the worker and `processor batch` need offsets. They are
resolved once, when the run starts, with one ListOffsets round per kind of point:

- `earliest`: the partition's log start; `latest`: its end when the run starts, read
  committed (the last stable offset: records of transactions still open are not in range);
- a timestamp: the first offset whose record's timestamp is at or after it, or the
  partition's end when it has none;
- `offsets`: as given, for the partitions named; a partition not named runs from
  `earliest` (start) or to `latest` (end). A partition the topic lacks is an error.

Every point is clamped to the partition's `[earliest, latest]` (an end beyond the current
end never waits for records), and an end below its start makes the range empty. Resolution
is split from the fetching so the rules are tested without a broker.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from confluent_kafka import IsolationLevel, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from processor.errors import ProcessorError
from processor.spec.bounded import Bound, BoundedSpec, BoundPoint


@dataclass(frozen=True)
class PartitionRange:
    """Offsets `start` (first to read) up to, not including, `end`."""

    start: int
    end: int

    @property
    def empty(self) -> bool:
        return self.start >= self.end


Ranges = dict[int, PartitionRange]
"""Partition -> its range."""


@dataclass(frozen=True)
class PartitionOffsets:
    """What the broker said about a topic's partitions: log start and (committed) end."""

    earliest: Mapping[int, int]
    latest: Mapping[int, int]


BOUNDED_FIELDS = {"start": "bounded.start", "end": "bounded.end"}


def check_partitions(source: str, bounded: BoundedSpec, partitions: list[int], *,
                     fields: Mapping[str, str] = BOUNDED_FIELDS) -> None:
    """`offsets` naming a partition the topic lacks: a precise error naming the YAML field
    (`fields`: side -> field path, e.g. a backfill's switch is the end of its history)."""
    for side in ("start", "end"):
        point = getattr(bounded, side)
        if isinstance(point, Bound) and point.offsets is not None:
            unknown = sorted(set(point.offsets) - set(partitions))
            if unknown:
                raise ProcessorError(
                    f"source {source!r}: {fields[side]}.offsets names partition"
                    f"{'s' * (len(unknown) > 1)} {', '.join(map(str, unknown))}, but its topic "
                    f"has {len(partitions)} (0-{len(partitions) - 1})")


def compute_ranges(bounded: BoundedSpec, offsets: PartitionOffsets,
                   at_time: Mapping[int, Mapping[int, int]]) -> Ranges:
    """The ranges, given the broker's offsets; `at_time[ts][p]` is the first offset at or
    after timestamp `ts` in partition `p` (-1: none)."""
    out: Ranges = {}
    for p in sorted(offsets.latest):
        low, high = offsets.earliest[p], offsets.latest[p]
        start = _point(bounded.start, p, low, high, at_time, default=low)
        end = _point(bounded.end, p, low, high, at_time, default=high)
        out[p] = PartitionRange(start, max(start, end))
    return out


def _point(point: BoundPoint, p: int, low: int, high: int,
           at_time: Mapping[int, Mapping[int, int]], *, default: int) -> int:
    if point == "earliest":
        return low
    if point == "latest":
        return high
    assert isinstance(point, Bound)
    if point.timestamp is not None:
        found = at_time[point.timestamp][p]
        offset = high if found < 0 else found
    else:
        assert point.offsets is not None
        offset = point.offsets.get(p, default)
    return min(max(offset, low), high)


def resolve_ranges(admin: AdminClient, source: str, topic: str, bounded: BoundedSpec, *,
                   timeout: float = 30.0, fields: Mapping[str, str] = BOUNDED_FIELDS) -> Ranges:
    """Ask the broker and resolve `bounded` for `topic` (source `source` and the YAML
    `fields` of its points, for errors)."""
    try:
        # all topics: asking for one by name would create it where auto-creation is on
        meta = admin.list_topics(timeout=timeout).topics.get(topic)
    except KafkaException as exc:
        raise ProcessorError(f"source {source!r}: cannot list topic {topic!r}: "
                             f"{exc.args[0].str()} (check bootstrap_servers / "
                             "--bootstrap-servers and that the broker is up)") from None
    if meta is None or meta.error is not None or not meta.partitions:
        raise ProcessorError(f"source {source!r}: topic {topic!r} does not exist (a bounded "
                             "source reads a range of an existing topic)")
    partitions = sorted(meta.partitions)
    check_partitions(source, bounded, partitions, fields=fields)
    earliest = _list_offsets(admin, topic, partitions, OffsetSpec.earliest(), timeout)
    latest = _list_offsets(admin, topic, partitions, OffsetSpec.latest(), timeout)
    stamps = {b.timestamp for b in (bounded.start, bounded.end)
              if isinstance(b, Bound) and b.timestamp is not None}
    at_time = {ts: _list_offsets(admin, topic, partitions, OffsetSpec.for_timestamp(ts), timeout)
               for ts in stamps}
    return compute_ranges(bounded, PartitionOffsets(earliest, latest), at_time)


def _list_offsets(admin: AdminClient, topic: str, partitions: list[int], spec: OffsetSpec,
                  timeout: float) -> dict[int, int]:
    """One ListOffsets round, read committed: `latest` is the last stable offset."""
    futures = admin.list_offsets({TopicPartition(topic, p): spec for p in partitions},
                                 isolation_level=IsolationLevel.READ_COMMITTED,
                                 request_timeout=timeout)
    try:
        return {tp.partition: f.result().offset for tp, f in futures.items()}
    except KafkaException as exc:
        raise ProcessorError(f"cannot list the offsets of topic {topic!r}: "
                             f"{exc.args[0].str()}") from None


def describe(ranges: Ranges) -> dict[str, list[int]]:
    """Ranges for a log line: {"partition": [start, end]}."""
    return {str(p): [r.start, r.end] for p, r in sorted(ranges.items())}
