"""Where a task stands in its input, as its checkpoint records it beside the stores' data.

After each commit every store of a task holds the same metadata: the next input offset
(`position`), for a repartition input the upstream marks below, and with event time the
watermark state (event_time.py). The changelog carries the same as one position record
(state/changelog.py), so a restore from either ends at the same place, and a restored task
skips the input its stores already reflect.

Upstream marks: a repartition record is `[upstream slot, source offset, seq, value]`; per
slot the task keeps the highest (source offset, seq) it absorbed. A record at or below it was
re-sent by an upstream task replaying after a crash, and is dropped.
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson

from processor.state import RocksStore
from processor.state.store import (
    META_CHANGELOG_OFFSET,
    META_POSITION,
    META_TIME,
    META_UPSTREAM,
)

Mark = tuple[int, int]  # (source offset, seq)


class UpstreamMarks:
    """A repartition input's de-duplication marks: upstream slot -> highest mark absorbed."""

    def __init__(self) -> None:
        self.highest: dict[int, Mark] = {}
        self.duplicates_dropped = 0

    def restore(self, stored: Iterable[bytes | None]) -> None:
        """The marks the stores hold. Stores of one task are checkpointed together; if a crash
        split them, the lower marks re-admit what the lagging store still needs."""
        marks: dict[int, Mark] | None = None
        for raw in stored:
            if raw is None:
                continue
            theirs = {int(p): (m[0], m[1]) for p, m in orjson.loads(raw).items()}
            marks = theirs if marks is None else {
                p: min(m, theirs.get(p, m)) for p, m in marks.items()}
        self.highest = marks or {}

    def encode(self) -> bytes:
        return orjson.dumps({str(p): list(m) for p, m in self.highest.items()})


def start_position(stores: Iterable[RocksStore]) -> int | None:
    """Lowest input offset some store still needs; None when no store knows."""
    positions = [s.position for s in stores]
    known = [p for p in positions if p is not None]
    return min(known) if known and len(known) == len(positions) else None


def store_meta(position: int | None, upstream: bytes | None, time_state: bytes | None,
               changelog_next: int | None) -> dict[str, int | bytes]:
    """The metadata a store is written with at a commit, beside its data."""
    meta: dict[str, int | bytes] = {}
    if position is not None:
        meta[META_POSITION] = position
    if upstream is not None:
        meta[META_UPSTREAM] = upstream
    if time_state is not None:
        meta[META_TIME] = time_state
    if changelog_next is not None:
        meta[META_CHANGELOG_OFFSET] = changelog_next
    return meta
