"""What a bounded run leaves open: windows and timers still pending, and the input partitions
holding the watermark back.

A bounded run (`processor run --stop-when-idle`) ends when its input is drained, but results
that wait for event time (a window's end, an event-time timer) only come once every input
partition's watermark has passed them. A partition that never received a record, or lags the
others, holds the watermark of everything downstream of it; without this report the run ends
with missing results and no word why.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Holdback:
    """An input partition holding back a task's watermark (topic[partition] as the user names
    it), its watermark (None: never heard from) and the highest of the others (None: none)."""

    partition: str
    watermark: int | None
    others: int | None

    def describe(self) -> str:
        where = ("never heard from (no record, no idle_timeout)" if self.watermark is None
                 else f"at {format_time(self.watermark)}")
        ahead = f", others at {format_time(self.others)}" if self.others is not None else ""
        return f"{self.partition} {where}{ahead}"


PATTERN_KEYS = "pattern keys"
"""The kind a pattern step reports its open keys under (operators/patterns/operator.py)."""


class HasOpenWork(Protocol):
    def open_work(self) -> tuple[dict[str, dict[str, int]], list[Holdback]]: ...


@dataclass
class OpenWork:
    """Pending work by step (its kind -> count) and the partitions holding the watermark."""

    pending: dict[str, dict[str, int]] = field(default_factory=dict)
    held_back_by: list[Holdback] = field(default_factory=list)

    @property
    def windows(self) -> int:
        return sum(p.get("windows", 0) for p in self.pending.values())

    @property
    def timers(self) -> int:
        return sum(n for p in self.pending.values() for k, n in p.items() if k.endswith("timers"))

    @property
    def pattern_keys(self) -> int:
        """Keys of pattern steps still buffering events or holding partial matches."""
        return sum(p.get(PATTERN_KEYS, 0) for p in self.pending.values())

    @property
    def empty(self) -> bool:
        return (not self.windows and not self.timers and not self.pattern_keys
                and not self.held_back_by)

    def _headline(self) -> str:
        if self.empty:
            return "bounded run ended with nothing open"
        text = (f"bounded run ended with {self.windows} window{'s' * (self.windows != 1)} open "
                f"and {self.timers} timer{'s' * (self.timers != 1)} pending")
        if self.pattern_keys:
            text += (f", {self.pattern_keys} pattern key{'s' * (self.pattern_keys != 1)} with "
                     "buffered events or partial matches")
        return text

    def message(self) -> str:
        """One line: what stayed open and what holds it."""
        text = self._headline()
        if self.held_back_by:
            text += "; watermark held back by " + ", ".join(
                h.describe() for h in self.held_back_by)
        return text

    def fields(self) -> dict[str, Any]:
        """The structured form, for the log record's fields."""
        return {"open_windows": self.windows, "pending_timers": self.timers,
                "open_pattern_keys": self.pattern_keys,
                "pending_by_step": self.pending,
                "watermark_held_back_by": [
                    {"partition": h.partition, "watermark": h.watermark, "others": h.others}
                    for h in self.held_back_by]}

    def render(self) -> str:
        """Several lines for a person (the CLI prints them after a bounded run)."""
        lines = [self._headline() + (":" if not self.empty else "")]
        for step, counts in sorted(self.pending.items()):
            what = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)
            if what:
                lines.append(f"  step {step}: {what}")
        if self.held_back_by:
            lines.append("  the watermark is held back by:")
            lines.extend(f"    {h.describe()}" for h in self.held_back_by)
            lines.append("  results waiting for event time come once these partitions receive "
                         "records, or set the source's watermark idle_timeout")
        return "\n".join(lines)


def collect(tasks: Iterable[HasOpenWork]) -> OpenWork:
    """Sum the tasks' pending work by step; name each holding partition once."""
    report = OpenWork()
    held: dict[str, Holdback] = {}
    for task in tasks:
        pending, holdbacks = task.open_work()
        for step, counts in pending.items():
            into = report.pending.setdefault(step, {})
            for kind, n in counts.items():
                into[kind] = into.get(kind, 0) + n
        for h in holdbacks:
            held.setdefault(h.partition, h)
    report.held_back_by = sorted(held.values(), key=lambda h: _partition_order(h.partition))
    return report


def _partition_order(name: str) -> tuple[str, int]:
    topic, _, rest = name.rpartition("[")
    return topic, int(rest.rstrip("]"))


def format_time(ms: int) -> str:
    """Event time as UTC ISO 8601 with milliseconds."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"
