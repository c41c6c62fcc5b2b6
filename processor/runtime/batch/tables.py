"""The tables a batch run joins: read from their topics to the end before the first record.

A batch run sees each `table`, `global_table` and `broadcast` source as it is when the run
starts (a snapshot: the run does not follow later updates), held in the run's state dir like a
worker holds it. A file source joined with a per-task table is co-partitioned with it: its
rows go to as many partitions as the table topic has (unless the source says `partitions:`).
"""

from __future__ import annotations

from pathlib import Path

from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient

from processor.graph import Topology
from processor.runtime.config import WorkerConfig
from processor.runtime.durability.tables import TableFollower
from processor.runtime.global_state import GlobalState
from processor.runtime.kafka.clients import admin_config, restore_consumer_config
from processor.runtime.kafka.serdes import Serdes
from processor.runtime.kafka.topics import TopicError, partition_counts
from processor.runtime.tasks.task import Task


def table_topics(topology: Topology) -> list[str]:
    """The topics of every table, global table and broadcast the topology reads."""
    return list(dict.fromkeys(
        [t.topic for sub in topology.subtopologies for t in sub.tables]
        + [t.topic for t in (*topology.global_tables, *topology.broadcasts)]))


class BatchTables:
    """Table snapshots for one run; nothing (no broker) when the topology reads no table."""

    def __init__(self, topology: Topology, config: WorkerConfig, state_dir: Path,
                 serdes: Serdes) -> None:
        self.topology, self.config = topology, config
        self.topics = table_topics(topology)
        self.global_state = GlobalState(topology, state_dir, serdes)
        self.counts: dict[str, int] = {}
        self._follower: TableFollower | None = None
        if self.topics:
            counts = partition_counts(AdminClient(admin_config(config)))
            missing = [t for t in self.topics if t not in counts]
            if missing:
                raise TopicError(f"table topic(s) {', '.join(missing)} do not exist (a batch "
                                 "run reads its tables from their topics)")
            self.counts = {t: counts[t] for t in self.topics}
            self._follower = TableFollower(Consumer(restore_consumer_config(config)))

    def copartitioned(self, stream_topic: str) -> int | None:
        """The partition count a stream topic must have to meet its per-task tables."""
        for stream, table, _ in self.topology.copartitioned:
            if stream == stream_topic and table in self.counts:
                return self.counts[table]
        return None

    def load(self, tasks: list[Task]) -> None:
        """Read every table to its end: global ones once, per-task ones per task's partition."""
        follower = self._follower
        if follower is None:
            return
        timeout = self.config.table_bootstrap_timeout_ms / 1000
        self.global_state.start(follower, self.counts, timeout)
        for task in tasks:
            for name, store in task.tables.items():
                follower.add(f"{task.id}/{name}", task.table_topics[name], [task.partition],
                             store, on_ready=lambda: None)
        follower.bootstrap(timeout)

    def close(self) -> None:
        self.global_state.close()
        if self._follower is not None:
            self._follower.close()
