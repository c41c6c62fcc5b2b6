"""Parse human durations ("250ms", "5s", "1m", "2h", "1d") into milliseconds."""

from __future__ import annotations

import re

_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def parse_duration_ms(text: str | int | float) -> int:
    """Return the duration in ms; a bare number (or numeric string) is milliseconds."""
    if isinstance(text, bool):
        raise ValueError(f"not a duration: {text!r}")
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError(f"duration must not be negative: {text!r}")
        return int(text)
    match = _PATTERN.match(text)
    if not match:
        raise ValueError(
            f"not a duration: {text!r} (expected a number with a unit: ms, s, m, h, d; e.g. '5s')"
        )
    return round(float(match.group(1)) * _UNITS[match.group(2) or "ms"])
