"""A process function for the rescaling tests: value, list and map state plus timers in both
domains, so a process store holds every key family its layout has."""

from __future__ import annotations

from typing import Any


def track(ctx: Any, key: Any, value: Any) -> None:
    ctx.state.value("n").set(ctx.state.value("n").get(0) + 1)
    ctx.state.list("seen").append(value["i"])
    ctx.state.map("by-page").put(str(value["i"] % 3), value["i"])
    ctx.timers.register_event_time(value["ts"] + 60_000)
    ctx.timers.register_processing_time(10_000_000)


def fire(ctx: Any, key: Any, timestamp: int) -> None:
    ctx.emit({"fired": timestamp})
