"""Byte layouts for store keys that must sort by time.

RocksDB orders keys bytewise. An event time packed as 8 big-endian bytes of `t + 2**63`
sorts like the integer (negative times included), so a store whose keys start with a packed
time can be range-scanned "everything that ends before T" with one iterator seek.
"""

from __future__ import annotations

_BIAS = 1 << 63


def pack_ts(t: int) -> bytes:
    return (t + _BIAS).to_bytes(8, "big")


def unpack_ts(b: bytes) -> int:
    return int.from_bytes(b[:8], "big") - _BIAS
