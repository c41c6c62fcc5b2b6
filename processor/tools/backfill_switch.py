"""Where a backfill hands over: per partition of the live topic, the first offset read live.

The switch is a time T (`switch: {timestamp: T}`). The history is the files' rows whose event
time is before T; the live topic is read, per partition, from the first record whose *Kafka
timestamp* is at or after T (Kafka's offsets-for-times lookup), or from the partition's end
when it has none yet. The two agree exactly when the live topic's records carry their event
time as their Kafka timestamp (producers set it; the topic's `message.timestamp.type` is
CreateTime) and each partition's timestamps do not go back across T. A history kept in the
source's own topic (`backfill` without `file`) is that topic up to the switch offsets, which a
time or `switch: {offsets}` gives.

The identity of a backfill is the topology file's bytes (it holds the switch and the history
paths) with the application name: a rerun of the same file is the same backfill.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from confluent_kafka.admin import AdminClient

from processor.errors import ProcessorError
from processor.runtime.kafka.ranges import resolve_ranges
from processor.spec import LoadedSpec
from processor.spec.bounded import Bound, BoundedSpec
from processor.spec.topics import SourceSpec

LOOKUP_TIMEOUT_S = 15.0


def backfill_sources(loaded: LoadedSpec) -> dict[str, SourceSpec]:
    """The stream sources with `backfill:`; refuses a topology `processor backfill` cannot run."""
    spec = loaded.spec
    filled = {n: s for n, s in spec.sources.items() if s.backfill is not None}
    if not filled:
        raise ProcessorError(f"{loaded.file}: no source has `backfill:` (history to read "
                             "before the live topic); `processor batch` runs over files alone")
    others = [n for n, s in spec.sources.items()
              if s.kind == "stream" and s.backfill is None]
    if others:
        raise ProcessorError(f"source(s) {', '.join(others)} have no `backfill:`: every stream "
                             "source of a backfilled topology needs its history up to the switch")
    return filled


def backfill_identity(loaded: LoadedSpec, application: str) -> str:
    """16 hex digits naming this backfill: the topology file's bytes and the application."""
    digest = hashlib.sha256(application.encode() + b"\0" + Path(loaded.file).read_bytes())
    return digest.hexdigest()[:16]


def switch_offsets(admin: AdminClient, source: str, topic: str, switch: Bound
                   ) -> dict[int, int]:
    """The switch offsets of `topic`, asked of the broker: the end of the range of its history
    (runtime/kafka/ranges.py): per partition the first offset whose record's timestamp is at or
    after `switch.timestamp`, else the partition's end; or `switch.offsets`, a partition not
    named switching at its end (all of it is history)."""
    ranges = resolve_ranges(admin, source, topic, BoundedSpec(end=switch),
                            timeout=LOOKUP_TIMEOUT_S,
                            fields={"start": "backfill.history", "end": "backfill.switch"})
    return {p: r.end for p, r in ranges.items()}
