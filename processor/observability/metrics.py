"""Prometheus metrics of a worker (units in names). Updated per batch, never per record."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.records_consumed = Counter("processor_records_consumed_total",
                                        "Records consumed from input topics", ["topic"], registry=r)
        self.records_produced = Counter("processor_records_produced_total",
                                        "Records produced to sink and repartition topics",
                                        ["topic"], registry=r)
        self.changelog_records = Counter("processor_changelog_records_total",
                                         "Records written to changelog topics", ["store"],
                                         registry=r)
        self.checkpoint_seconds = Histogram(
            "processor_checkpoint_duration_seconds", "Time to flush, write changelogs and commit",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=r)
        self.checkpoints = Counter("processor_checkpoints_total", "Checkpoints by result",
                                   ["result"], registry=r)
        self.restore_records = Counter("processor_restore_records_total",
                                       "Changelog records applied during restore", registry=r)
        self.late_records = Counter("processor_late_records_total",
                                    "Records behind every window's lateness bound (sent to the "
                                    "late topic or dropped, as the window says)", ["topic"],
                                    registry=r)
        self.dead_letters = Counter("processor_dead_letter_records_total",
                                    "Records that failed and went to the dead-letter topic "
                                    "(on_error: dlq)", ["topic", "step", "error"], registry=r)
        self.skipped_records = Counter("processor_skipped_records_total",
                                       "Records that failed and were dropped (on_error: skip)",
                                       ["topic", "step", "error"], registry=r)
        self.watermark = Gauge("processor_watermark_seconds",
                               "Event-time watermark of a task (epoch seconds)",
                               ["topic", "partition"], registry=r)
        self.tasks = Gauge("processor_tasks", "Assigned tasks by state", ["state"], registry=r)
        self.rebalances = Counter("processor_rebalances_total", "Partition assignments and revocations",
                                  ["kind"], registry=r)

    def serve(self, port: int) -> None:
        start_http_server(port, registry=self.registry)
