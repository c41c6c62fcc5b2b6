"""Queryable state: `GET /state/{store}/{key}` answered from the committed RocksDB state of the
task that owns the key, here or — found through the worker directory — on another worker, to
which the request is proxied. The key's partition is Kafka's default partitioner over the key
as the store encodes it (how repartition topics are written, and producers' default)."""

from __future__ import annotations

import logging
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

import orjson

from processor.operators.base import Queryable
from processor.runtime.serving.directory import WorkerDirectory
from processor.runtime.tasks.task import Task, TaskState
from processor.serde import serde_for
from processor.state.partitioner import partition_for

log = logging.getLogger("processor.queries")

FORWARDED = "X-Processor-Forwarded"
Answer = tuple[int, dict[str, Any]]
_JSON_ENCODE = serde_for("json").encode


def parse_key(text: str, encode: Callable[[Any], bytes | None]) -> Any:
    """A JSON-keyed store takes the path segment as JSON when it parses (`5`, `"5"`,
    `{"a":1}`), else as a string; other stores take it as a string."""
    if encode is _JSON_ENCODE:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            return text
    return text


class StateQueries:
    def __init__(self, tasks: Callable[[], dict[tuple[str, int], Task]],
                 stores: dict[str, str], partitions: dict[str, int], worker_id: str,
                 directory: WorkerDirectory | None) -> None:
        self._tasks = tasks  # the worker's live task table
        self.stores = stores  # store name -> the input topic of its sub-topology
        self.partitions = partitions  # topic -> partition count
        self.worker_id = worker_id
        self.directory = directory

    def get(self, store: str, key_text: str, forwarded: bool,
            query: dict[str, str] | None = None) -> Answer:
        """`query`: `from` / `to` (epoch ms) keep a windowed store's windows that overlap
        [from, to)."""
        query = query or {}
        try:
            bounds = (int(query.get("from", -(1 << 63))), int(query.get("to", 1 << 63)))
        except ValueError:
            return 400, {"error": "from and to are epoch milliseconds"}
        topic = self.stores.get(store)
        if topic is None:
            return 404, {"error": f"no store {store!r}", "stores": sorted(self.stores)}
        op, task = self._operator(store, topic)
        encode = op.key_encode if op is not None else _JSON_ENCODE
        key = parse_key(key_text, encode)
        kb = encode(key)
        if kb is None:
            return 400, {"error": "a null key is never stored"}
        partition = partition_for(kb, self.partitions[topic])
        task = self._tasks().get((topic, partition))
        if task is not None:
            return self._local(task, store, key, partition, bounds)
        if forwarded:
            return 503, {"error": f"partition {partition} is not owned here (directory out of "
                                  "date during a rebalance); retry", "partition": partition}
        return self._remote(store, key_text, topic, partition, query)

    def _operator(self, store: str, topic: str) -> tuple[Any, Task | None]:
        for (t, _), task in self._tasks().items():
            if t == topic:
                for _, _, op in task.stateful:
                    if op.store_name == store:
                        return op, task
        return None, None

    def _local(self, task: Task, store: str, key: Any, partition: int,
               bounds: tuple[int, int]) -> Answer:
        base = {"store": store, "key": key, "partition": partition, "worker": self.worker_id}
        if task.state is not TaskState.RUNNING:
            return 503, {**base, "error": f"task {task.id} is {task.state.value}; retry"}
        op = next(op for _, _, op in task.stateful if op.store_name == store)
        if not isinstance(op, Queryable):
            return 400, {**base, "error": f"store {store!r} ({type(op).__name__}) is not queryable"}
        try:
            value = op.read(task.stores[store], op.key_encode(key))
        except Exception as exc:  # the store closed under us (rebalance)
            return 503, {**base, "error": f"store unavailable: {exc}; retry"}
        if isinstance(value, list):  # a windowed store: the open windows overlapping [from, to)
            lo, hi = bounds
            value = [w for w in value if w["window_end"] > lo and w["window_start"] < hi]
        if value is None or value == []:
            return 404, {**base, "error": "key not found"}
        return 200, {**base, "value": value}

    def _remote(self, store: str, key_text: str, topic: str, partition: int,
                query: dict[str, str]) -> Answer:
        url = self.directory.owner(topic, partition) if self.directory else None
        if url is None:
            return 503, {"error": f"no worker owns {topic}[{partition}] right now; retry",
                         "partition": partition}
        target = (f"{url.rstrip('/')}/state/{urllib.parse.quote(store)}/"
                  f"{urllib.parse.quote(key_text, safe='')}"
                  + (f"?{urllib.parse.urlencode(query)}" if query else ""))
        request = urllib.request.Request(target, headers={FORWARDED: self.worker_id})
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                return resp.status, {**orjson.loads(resp.read()), "via": self.worker_id}
        except urllib.error.HTTPError as exc:
            return exc.code, {**orjson.loads(exc.read() or b"{}"), "via": self.worker_id}
        except (urllib.error.URLError, OSError) as exc:
            return 502, {"error": f"owner {url} of {topic}[{partition}] unreachable: {exc}"}
