"""Telemetry's export of the memory budget's cache trims to the `processor_state_cache_trims_total`
counter: each trim once, exported after the checkpoint that made it."""

from __future__ import annotations

import time
from types import SimpleNamespace

from processor.observability.metrics import Metrics
from processor.runtime.config import WorkerConfig
from processor.runtime.telemetry import Telemetry
from processor.state.memory import MIN_BUDGET, StateMemory


class Cache:
    """A write cache of a given size that a trim empties."""

    def __init__(self, size: int) -> None:
        self.size = size

    def cache_bytes(self) -> int:
        return self.size

    def trim_cache(self) -> None:
        self.size = 0


def _telemetry(memory: StateMemory | None) -> tuple[Telemetry, Metrics]:
    metrics = Metrics()
    telemetry = Telemetry(metrics, WorkerConfig(), SimpleNamespace(tasks={}), None, {},  # type: ignore[arg-type]
                          last_turn=time.monotonic, stopping=lambda: False,
                          started_at=time.monotonic(), memory=memory)
    return telemetry, metrics


def _trims(metrics: Metrics) -> float | None:
    return metrics.registry.get_sample_value("processor_state_cache_trims_total")


def test_each_trim_is_counted_once_after_the_checkpoint_that_made_it():
    memory = StateMemory(MIN_BUDGET)
    telemetry, metrics = _telemetry(memory)
    share = memory.split.write_caches
    telemetry.export()
    assert _trims(metrics) == 0  # the series exists before any trim

    memory.enforce([Cache(share // 2), Cache(share // 4)])  # fits: nothing trimmed
    telemetry.export()
    assert _trims(metrics) == 0

    memory.enforce([Cache(share), Cache(share // 2), Cache(10)])  # the largest goes
    telemetry.export()
    telemetry.export()  # nothing new since
    assert _trims(metrics) == 1

    memory.enforce([Cache(share), Cache(share), Cache(share)])  # two of three go
    telemetry.export()
    assert _trims(metrics) == 3 == memory.trims


def test_no_budget_no_trims():
    telemetry, metrics = _telemetry(None)
    telemetry.export()
    assert _trims(metrics) == 0
