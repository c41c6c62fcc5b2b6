"""The worker's HTTP port and its entry in the worker directory.

One port serves /metrics, /healthz and /readyz (runtime/telemetry.py), queryable state
(runtime/serving/queries.py) and POST /stop (`RemoteStop`, for `savepoint create
--stop-workers`). So that a state query reaching the wrong worker can be forwarded, each
worker publishes its URL and the partitions it holds to the worker directory
(runtime/serving/directory.py) after every change of its tasks, and withdraws when it stops. Neither
may hold up processing: a directory that cannot be written only degrades the state API.
"""

from __future__ import annotations

import hmac
import logging
import socket
from collections.abc import Callable

from pydantic import SecretStr

from processor.graph import Topology
from processor.observability.http import Answer, HttpServer
from processor.observability.metrics import Metrics
from processor.runtime.config import WorkerConfig
from processor.runtime.kafka.clients import admin_config
from processor.runtime.serving.directory import WorkerDirectory
from processor.runtime.serving.queries import StateQueries
from processor.runtime.tasks.task import Task

log = logging.getLogger("processor.worker")  # the worker's log lines, as before the split


class RemoteStop:
    """POST /stop: the worker stops as on SIGTERM (final checkpoint, leaves the group, exit 0)
    when the request's bearer token equals `remote_stop_token`; without that setting the route
    refuses everyone (403), so no one on the network can stop a worker by default. Idempotent:
    a worker already stopping answers as the first time, with `already: true`."""

    def __init__(self, token: SecretStr | None, worker_id: str, *, stop: Callable[[], None],
                 stopping: Callable[[], bool]) -> None:
        self.token, self.worker_id, self.stop, self.stopping = token, worker_id, stop, stopping

    def answer(self, token: str | None, check: bool) -> Answer:
        if self.token is None:
            return 403, {"error": "remote stop is off on this worker: set remote_stop_token "
                                  "(PROCESSOR_REMOTE_STOP_TOKEN)", "reason": "off",
                         "worker_id": self.worker_id}
        if token is None or not hmac.compare_digest(token.encode(),
                                                    self.token.get_secret_value().encode()):
            return 403, {"error": "wrong or missing bearer token (remote_stop_token)",
                         "reason": "token", "worker_id": self.worker_id}
        already = self.stopping()
        if check:
            return 200, {"worker_id": self.worker_id, "allowed": True, "stopping": already}
        if not already:
            log.info("stop requested over HTTP (POST /stop)", extra={"worker_id": self.worker_id})
            self.stop()
        return 202, {"worker_id": self.worker_id, "stopping": True, "already": already}


class Endpoint:
    def __init__(self, config: WorkerConfig, topology: Topology, worker_id: str, metrics: Metrics,
                 partitions: dict[str, int], *, health: Callable[[], Answer],
                 ready: Callable[[], Answer], tasks: Callable[[], dict[tuple[str, int], Task]],
                 stop: Callable[[], None], stopping: Callable[[], bool]) -> None:
        """`partitions`: each topic's partition count; `tasks()`: the worker's current tasks;
        `stop()` does what SIGTERM does, `stopping()` says whether it was asked to."""
        assert config.metrics_port is not None
        remote_stop = RemoteStop(config.remote_stop_token, worker_id, stop=stop,
                                 stopping=stopping)
        self.http = HttpServer(config.metrics_port, metrics.registry, health=health, ready=ready,
                               stop=remote_stop.answer)
        url = config.advertised_url or f"http://{socket.gethostname()}:{self.http.port}"
        # plain (non-transactional) clients with the worker's security settings
        self.directory = WorkerDirectory(admin_config(config), topology.name, worker_id, url)
        stores = {s.name: sub.source.topic for sub in topology.subtopologies for s in sub.stores}
        queries = StateQueries(lambda: dict(tasks()), stores, partitions, worker_id,
                               self.directory)
        self.http.state = queries.get

    def start(self) -> None:
        self.http.start()

    def publish(self, assignment: dict[str, list[int]], member_id: str | None) -> None:
        try:
            self.directory.publish(assignment, member_id)
        except Exception as exc:  # the state API degrades; processing must not
            log.warning("cannot publish to the worker directory", extra={"error": str(exc)})

    def stop(self) -> None:
        try:
            self.directory.withdraw()
        except Exception as exc:
            log.warning("cannot withdraw from the worker directory", extra={"error": str(exc)})
        self.http.stop()
