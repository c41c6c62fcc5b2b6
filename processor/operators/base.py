"""Records and the operator contract shared by every step.

A record is a plain tuple `(key, value, timestamp_ms, offset)` — tuples are the cheapest
Python object to build and unpack on the hot path. `offset` is the offset of the source
record the value derives from; it gives errors their coordinates and lets a restored store
skip input it has already absorbed.

The contract is written as base classes: an operator declares what it can do by what it
derives from, and the runtime asks with `isinstance` (runtime/tasks/chains.py, once per task;
runtime/serving/queries.py for Queryable), never by probing attributes:

    Operator                  process(batch) -> batch; step_names()
      Stateless               a batch function, re-run record by record to find a culprit
      RoutingOperator         ends its chain; leaves one batch per case in `routed` (branch)
      StatefulOperator        a store: bind, flush, committed, discard
        TimedOperator         event time: on_watermark, `late` (+ `late_sink`)
          + DeferredInput     buffers input: `failed` records, `timeouts` (+ `timeout_sink`)
          ProcessingTimeOperator   wall-clock timers: on_processing_time
    Queryable                 (mixin) answers point lookups on its committed store

Every entry point that takes records raises StepFailed when one record fails (below).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

Record = tuple[Any, Any, int, int]
Batch = list[Record]
Writes = dict[bytes, bytes | None]
"""Changelog writes of a flush: store key -> value, None deleting the key."""
LateRecord = tuple[Record, int, int, int]
"""(record, window_start, window_end, watermark before the record); 0, 0 outside a window."""
LateSink = Callable[[list[LateRecord]], None]


class StepFailed(Exception):
    """A step raised on one record; carries what the runtime needs to go on without it.

    Contract when `index >= 0`: the step fully processed `batch[:index]` (its outputs are
    `partial`), the failing record `batch[index]` changed nothing, and `batch[index + 1:]` is
    untouched — so the runtime can hand the record to its error policy and resume the step
    with the rest. `index == -1`: the failure is not tied to one input record of the call
    (e.g. a timer or a closing window); `record` then names what failed, and `retry` says
    whether calling the same entry point again goes on past it (a failed timer is removed).
    """

    retry = False

    def __init__(self, step: str, record: Record, cause: BaseException, *, index: int = -1,
                 partial: Batch | None = None) -> None:
        self.step, self.record, self.cause = step, record, cause
        self.index = index
        self.partial: Batch = partial if partial is not None else []
        super().__init__(f"{type(cause).__name__}: {cause}")


def index_of(batch: list[Any], record: Any) -> int:
    """Where `record` (the very object) sits in `batch`, or -1: only on failure paths."""
    return next((i for i, r in enumerate(batch) if r is record), -1)


def failed_at(step: str, batch: Batch, record: Record | None, cause: BaseException,
              partial: Batch) -> StepFailed:
    """A StepFailed for `record`, located in `batch` by identity (only on the failure path)."""
    index = index_of(batch, record)
    if record is None or index < 0:
        return StepFailed(step, record or (None, None, 0, -1), cause)
    return StepFailed(step, record, cause, index=index, partial=partial)


class Operator(ABC):
    """One step of a pipeline, applied to a batch of records: `process` returns the records
    to pass down the chain (the same list, a new one, or nothing)."""

    name: str
    stateful: ClassVar[bool] = False  # declared by StatefulOperator; shown by describe/tests

    @abstractmethod
    def process(self, batch: Batch) -> Batch: ...

    def step_names(self) -> tuple[str, ...]:
        """The spec steps this operator runs: a dead letter names the step it failed at, and
        a replay looks that step up (a fused run answers for each of its steps)."""
        return (self.name,)


class RoutingOperator(Operator):
    """Ends its chain and splits its input among cases (`branch`): `process` returns nothing
    and leaves one batch per case in `routed`, which the task runs down each case's chain.
    After a StepFailed, `routed` holds the records routed before the failing one."""

    routed: list[Batch]


class StatefulOperator(Operator):
    """A step over a store (aggregate, window, process function, join).

    The task calls, in order: `bind(store, skip_below)` once the store is restored (input
    offsets below `skip_below` are already in it: skip them); `process` per batch; at each
    checkpoint `flush()` -> (records to emit downstream, changelog writes since the last
    flush); after the commit succeeded `committed()` (the writes are in the store now: the
    cache may be trimmed), then maybe `trim_cache()` when the worker's memory budget is over;
    on a dirty close `discard()` (forget everything uncommitted). The operator only reads its
    store: the task writes it, atomically with the checkpoint.
    """

    stateful = True
    store_name: str

    @abstractmethod
    def bind(self, store: Any, skip_below: int = -1) -> None: ...

    @abstractmethod
    def flush(self) -> tuple[Batch, Writes]: ...

    @abstractmethod
    def committed(self) -> None: ...

    @abstractmethod
    def discard(self) -> None: ...

    # the write cache, as the worker's memory budget sees it (state/memory.py `WriteCache`)
    @abstractmethod
    def cache_bytes(self) -> int:
        """Estimated bytes of decoded state held beside the store."""

    @abstractmethod
    def trim_cache(self) -> None:
        """Drop cached state the store holds (only between `committed()` and the next batch)."""


# bytes per cached entry of the operators that do not estimate theirs from its size (windows,
# process functions, joins, patterns): a decoded accumulator or state value with its key and
# index slots, at the aggregate's resident cost of a mid-sized entry (not measured per operator)
CACHED_ENTRY_BYTES = 500


class TimedOperator(StatefulOperator):
    """A stateful step driven by event time (windows, process functions, joins).

    `on_watermark(watermark, offset)` returns what the watermark made due (closed windows,
    event-time timers), stamped with input offset `offset`; the task calls it after each batch
    and after an idle advance. Records the step could not take go to `late`; the task drains
    the list after each call, counts them and hands them to `late_sink` when the step has a
    late topic (set by the graph builder). A failing timer raises StepFailed with `retry`
    set: calling again goes on past it.
    """

    late: list[LateRecord]
    late_sink: LateSink | None = None

    @abstractmethod
    def on_watermark(self, watermark: int, offset: int) -> Batch: ...

    @abstractmethod
    def pending(self) -> dict[str, int]:
        """What the committed store still holds open, by kind (windows; timers per time
        domain): read after a commit, when a bounded run ends (runtime/open_work.py)."""


class DeferredInput(ABC):
    """Mixin of a timed step that buffers its input and runs user code on it later, when the
    watermark passes it (a pattern). A record failing then is reported in `failed` (StepFailed
    with the record's coordinates, index -1: it changed nothing), and the step's own outputs to
    a topic of its own (a pattern's timeouts) wait in `timeouts` for `timeout_sink` (None:
    dropped, counted). The task drains both after each call, like `late`."""

    failed: list[StepFailed]
    timeouts: Batch
    timeout_sink: Callable[[Batch], None] | None = None
    matches = 0  # matches emitted since the task last drained (metrics)


class ProcessingTimeOperator(TimedOperator):
    """A timed step with wall-clock timers: the task calls `on_processing_time(now_ms,
    offset)` between batches (every commit interval) and runs what it returns downstream."""

    @abstractmethod
    def on_processing_time(self, now_ms: int, offset: int) -> Batch: ...


class Queryable(ABC):
    """Mixin of a stateful step whose committed store answers point lookups (queries.py)."""

    key_encode: Callable[[Any], bytes | None]

    @abstractmethod
    def read(self, store: Any, kb: bytes) -> Any:
        """The committed result for key bytes `kb`, or None."""


class Stateless(Operator):
    """Base for steps without state: a batch function plus a per-record fallback to find culprits."""

    def __init__(self, name: str) -> None:
        self.name = name

    def process(self, batch: Batch) -> Batch:
        try:
            return self._batch(batch)
        except Exception as exc:  # locate the failing record; the step has no side effects
            raise self._locate(batch, exc) from exc

    def _locate(self, batch: Batch, exc: Exception) -> StepFailed:
        """The first record that fails on its own, with the outputs of the records before it."""
        for i, record in enumerate(batch):
            try:
                self._batch([record])
            except Exception as one:
                return StepFailed(self.name, record, one, index=i, partial=self._batch(batch[:i]))
        return StepFailed(self.name, batch[0], exc)

    def _batch(self, batch: Batch) -> Batch:
        raise NotImplementedError


RecordFn = Callable[[Any, Any, int], Any]


class KeyFamilyError(ValueError):
    """A store key of no family its operator writes."""


def _no_bookkeeping(store_key: bytes, values: list[bytes]) -> bytes | None:
    raise KeyFamilyError(f"{store_key!r} is not a bookkeeping entry")


@dataclass(frozen=True)
class StoreKeys:
    """How an operator's store keys name the record key their entry belongs to: a rescaling
    restore (tools/savepoint_rescale.py) moves each entry to the partition of that key.

    `record_key(store_key)` returns the key bytes as the topic feeding the store carries them,
    or None for a per-partition bookkeeping entry; `merge(store_key, values)` is the value of
    such an entry in a partition made from several (None: drop it). Both raise KeyFamilyError
    for a key of no family listed in `families`."""

    families: str
    record_key: Callable[[bytes], bytes | None]
    merge: Callable[[bytes, list[bytes]], bytes | None] = _no_bookkeeping
