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

For a task that tracks event time it also carries the *time* state (the watermark tracker,
timeutil/watermark.py) as of that position, so a restored task neither re-opens windows it
already closed nor waits again for a watermark it had already passed.
"""

from __future__ import annotations

import orjson

from processor.state.store import META_POSITION, META_TIME, META_UPSTREAM

POSITION_KEY = b"\x00__processor_position__"
LAYOUT_KEY = b"\x00__processor_layout__"
"""A changelog record under this key holds the store's state layout (graph/layout.py), written
at a task's first checkpoint when the changelog holds none or another one; compaction keeps
the latest. Restore puts it in the store's metadata, where the task compares it."""
CHANGELOG_CONFIGS = {
    "cleanup.policy": "compact",
    "min.compaction.lag.ms": "0",
    "segment.bytes": str(64 * 1024 * 1024),
}


def encode_position(offset: int, upstream: bytes | None = None, time: bytes | None = None) -> bytes:
    """`{"position": offset, "upstream": {...}, "time": {...}}`; the parts are already JSON."""
    out = b'{"position":%d' % offset
    if upstream is not None:
        out += b',"upstream":' + upstream
    if time is not None:
        out += b',"time":' + time
    return out + b"}"


def decode_position(value: bytes) -> dict[str, int | bytes]:
    """The store metadata a position record restores (names from state/store.py)."""
    data = orjson.loads(value)
    meta: dict[str, int | bytes] = {META_POSITION: int(data["position"])}
    for name, meta_name in (("upstream", META_UPSTREAM), ("time", META_TIME)):
        if data.get(name) is not None:
            meta[meta_name] = orjson.dumps(data[name])
    return meta


def changelog_topic(topology: str, store: str) -> str:
    return f"{topology}-{store}-changelog"
