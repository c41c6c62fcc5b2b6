"""Changelog record conventions.

A changelog partition holds the store's writes (key = store key bytes, value = state bytes,
None = delete) plus, at each checkpoint, one *position record* carrying the input offset the
store reflects. Restore reads it back, so a task knows which input records its state already
contains even when the consumer-group commit did not happen (a crash after the changelog
write): state stays exactly-once under at-least-once processing, and on brokers that do
not hide aborted transactions.

For a task reading a repartition topic the position record also carries the *upstream
marks*: per upstream partition, the highest (source offset, sequence) already absorbed.
Repartition records carry those coordinates in their envelope, so copies re-sent by an
upstream task that replayed after a crash are recognised and dropped.
"""

from __future__ import annotations

import orjson

POSITION_KEY = b"\x00__processor_position__"
CHANGELOG_CONFIGS = {
    "cleanup.policy": "compact",
    "min.compaction.lag.ms": "0",
    "segment.bytes": str(64 * 1024 * 1024),
}


def encode_position(offset: int, upstream: bytes | None = None) -> bytes:
    """`{"position": offset, "upstream": {...}}`; upstream marks are already JSON."""
    if upstream is None:
        return b'{"position":%d}' % offset
    return b'{"position":%d,"upstream":%s}' % (offset, upstream)


def decode_position(value: bytes) -> tuple[int, bytes | None]:
    data = orjson.loads(value)
    upstream = data.get("upstream")
    return int(data["position"]), (None if upstream is None else orjson.dumps(upstream))


def changelog_topic(topology: str, store: str) -> str:
    return f"{topology}-{store}-changelog"
