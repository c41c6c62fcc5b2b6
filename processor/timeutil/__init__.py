"""Time helpers: durations in the topology and config files."""

from processor.timeutil.durations import parse_duration_ms

__all__ = ["parse_duration_ms"]
