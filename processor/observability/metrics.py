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
        self.checkpoints = Counter("processor_checkpoints_total", "Checkpoints by result (ok, failed)",
                                   ["result"], registry=r)
        self.transactions = Counter("processor_transactions_total",
                                    "Kafka transactions by result (committed, aborted); exactly_once only",
                                    ["result"], registry=r)
        self.changelog_bytes = Counter("processor_changelog_bytes_total",
                                       "Key and value bytes written to changelog topics", ["store"],
                                       registry=r)
        self.consumer_lag = Gauge("processor_consumer_lag_records",
                                  "Records behind the end of an assigned input partition "
                                  "(high watermark - position)", ["topic", "partition"], registry=r)
        self.processing_latency = Histogram(
            "processor_processing_latency_seconds", "Time to process one consumed batch",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r)
        self.end_to_end_latency = Histogram(
            "processor_end_to_end_latency_seconds",
            "Record timestamp (event time or Kafka timestamp) to processed, per batch's last record",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300), registry=r)
        self.state_keys = Gauge("processor_state_keys", "Estimated keys in a local store partition",
                                ["store", "partition"], registry=r)
        self.state_bytes = Gauge("processor_state_bytes",
                                 "Estimated live data bytes of a local store partition",
                                 ["store", "partition"], registry=r)
        self.state_memory = Gauge("processor_state_memory_bytes",
                                  "State memory within the memory budget: RocksDB block cache, "
                                  "memtables, and the operators' write caches (estimated)",
                                  ["part"], registry=r)
        self.state_memory_budget = Gauge("processor_state_memory_budget_bytes",
                                         "The worker's memory_budget (0: unbounded)", registry=r)
        self.cache_trims = Counter("processor_state_cache_trims_total",
                                   "Operator write caches trimmed to fit the memory budget "
                                   "(their keys not kept are read from RocksDB when they return)",
                                   registry=r)
        self.restore_remaining = Gauge("processor_restore_remaining_records",
                                       "Changelog records left to restore for a store partition",
                                       ["store", "partition"], registry=r)
        self.restore_records = Counter("processor_restore_records_total",
                                       "Changelog records applied during restore", registry=r)
        self.late_records = Counter("processor_late_records_total",
                                    "Records behind every window's lateness bound (sent to the "
                                    "late topic or dropped, as the window says)", ["topic"],
                                    registry=r)
        self.pattern_matches = Counter("processor_pattern_matches_total",
                                       "Matches a pattern step emitted", ["topic", "step"],
                                       registry=r)
        self.pattern_timeouts = Counter("processor_pattern_timeouts_total",
                                        "Partial matches a pattern step timed out (sent to its "
                                        "timeouts topic or dropped)", ["topic", "step"],
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
