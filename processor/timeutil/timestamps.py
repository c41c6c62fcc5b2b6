"""Event-time extraction helpers used by the generated batch decoders (runtime/tasks/decode.py)."""

from __future__ import annotations

from datetime import UTC, datetime


def iso_to_ms(text: str) -> int:
    """ISO-8601 text -> epoch milliseconds; a time without an offset is UTC."""
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return round(dt.timestamp() * 1000)
