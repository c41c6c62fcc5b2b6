"""The worker's HTTP port and its entry in the worker directory.

One port serves /metrics, /healthz and /readyz (runtime/telemetry.py) and queryable state
(runtime/serving/queries.py). So that a state query reaching the wrong worker can be forwarded, each
worker publishes its URL and the partitions it holds to the worker directory
(runtime/serving/directory.py) after every change of its tasks, and withdraws when it stops. Neither
may hold up processing: a directory that cannot be written only degrades the state API.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable

from processor.graph import Topology
from processor.observability.http import Answer, HttpServer
from processor.observability.metrics import Metrics
from processor.runtime.config import WorkerConfig
from processor.runtime.kafka.clients import admin_config
from processor.runtime.serving.directory import WorkerDirectory
from processor.runtime.serving.queries import StateQueries
from processor.runtime.tasks.task import Task

log = logging.getLogger("processor.worker")  # the worker's log lines, as before the split


class Endpoint:
    def __init__(self, config: WorkerConfig, topology: Topology, worker_id: str, metrics: Metrics,
                 partitions: dict[str, int], *, health: Callable[[], Answer],
                 ready: Callable[[], Answer], tasks: Callable[[], dict[tuple[str, int], Task]]
                 ) -> None:
        """`partitions`: each topic's partition count; `tasks()`: the worker's current tasks."""
        assert config.metrics_port is not None
        self.http = HttpServer(config.metrics_port, metrics.registry, health=health, ready=ready)
        url = config.advertised_url or f"http://{socket.gethostname()}:{self.http.port}"
        # plain (non-transactional) clients with the worker's security settings
        self.directory = WorkerDirectory(admin_config(config), topology.name, worker_id, url)
        stores = {s.name: sub.source.topic for sub in topology.subtopologies for s in sub.stores}
        queries = StateQueries(lambda: dict(tasks()), stores, partitions, worker_id,
                               self.directory)
        self.http.state = queries.get

    def start(self) -> None:
        self.http.start()

    def publish(self, assignment: dict[str, list[int]]) -> None:
        try:
            self.directory.publish(assignment)
        except Exception as exc:  # the state API degrades; processing must not
            log.warning("cannot publish to the worker directory", extra={"error": str(exc)})

    def stop(self) -> None:
        try:
            self.directory.withdraw()
        except Exception as exc:
            log.warning("cannot withdraw from the worker directory", extra={"error": str(exc)})
        self.http.stop()
