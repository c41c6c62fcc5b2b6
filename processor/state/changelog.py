"""Changelog record conventions.

A changelog partition holds the store's writes (key = store key bytes, value = state bytes,
None = delete) plus, at each checkpoint, one *position record* carrying the input offset the
store reflects. Restore reads it back, so a task knows which input records its state already
contains even when the consumer-group commit did not happen (a crash after the changelog
write): state stays exactly-once under at-least-once processing, and on brokers that do
not hide aborted transactions.
"""

from __future__ import annotations

POSITION_KEY = b"\x00__processor_position__"
CHANGELOG_CONFIGS = {
    "cleanup.policy": "compact",
    "min.compaction.lag.ms": "0",
    "segment.bytes": str(64 * 1024 * 1024),
}


def encode_position(offset: int) -> bytes:
    return str(offset).encode()


def decode_position(value: bytes) -> int:
    return int(value)


def changelog_topic(topology: str, store: str) -> str:
    return f"{topology}-{store}-changelog"
