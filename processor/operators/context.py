"""What a process function sees: `ctx`, with the current key and time, keyed state and timers.

State handles are views on the operator's read-through cache, scoped to the key current when
the handle was made. Everything a handle stores is snapshotted as JSON (orjson) when it is
written and decoded afresh when it is read, so mutating an object after `set()` or after
`get()` never changes the state behind the operator's back, and a value that cannot be
serialized fails in the call that stores it — with the record's coordinates.

Everything here talks to the operator through `ProcessHost`, the small public face a process
operator (operators/process.py) gives its context.
"""

from __future__ import annotations

import operator
from typing import Any, Protocol

import orjson

from processor.expressions import BroadcastStates
from processor.operators.base import Batch
from processor.serde.formats import compact_json

# what the cache keeps is a compact copy: orjson's own bytes hold 4 KiB each (4 MB for a list
# state of 1,000 elements)
_dumps, _loads = compact_json, orjson.loads

KIND_VALUE, KIND_LIST, KIND_MAP = b"v", b"l", b"m"
EVENT_TIME, PROCESSING_TIME = b"e", b"p"
DOMAIN_NAMES = {EVENT_TIME: "event_time", PROCESSING_TIME: "processing_time"}

_CURRENT: Any = object()  # default of ctx.emit(key=...): the current key (None is a valid key)
_TS_MIN, _TS_MAX = -(1 << 63) + 1, (1 << 63) - 2  # what pack_ts(ts) and pack_ts(ts + 1) can hold


def decode_state(kind: bytes, raw: bytes | None) -> Any:
    """Stored bytes -> the cache's form: value bytes | None, list[bytes], dict[key, bytes]."""
    if kind == KIND_VALUE:
        return raw
    if raw is None:
        return [] if kind == KIND_LIST else {}
    if kind == KIND_LIST:
        return [_dumps(x) for x in _loads(raw)]
    return {k: _dumps(v) for k, v in _loads(raw)}


def encode_state(kind: bytes, obj: Any) -> bytes | None:
    """The cache's form -> stored bytes; None (delete) for an absent value, an empty list or map.
    A list is a JSON array; a map a JSON array of [key, value] pairs (keys keep their type)."""
    if kind == KIND_VALUE:
        return obj
    if not obj:
        return None
    if kind == KIND_LIST:
        return b"[" + b",".join(obj) + b"]"
    return b"[" + b",".join([b"[" + _dumps(k) + b"," + v + b"]" for k, v in obj.items()]) + b"]"


class ProcessHost(Protocol):
    """What `ctx` needs from the operator running the function. `sk` is a store key made by
    `state_key` for the key of the call in progress; the state's cached form is the one
    `decode_state` returns, changed in place and then reported with `state_changed`."""

    out: Batch  # the output of the call in progress: ctx.emit appends to it

    def state_key(self, kind: bytes, name: str) -> bytes: ...

    def cached_state(self, sk: bytes) -> Any: ...

    def set_state(self, sk: bytes, obj: Any) -> None: ...

    def state_changed(self, sk: bytes) -> None: ...

    def register_timer(self, domain: bytes, ts: Any) -> None: ...

    def delete_timer(self, domain: bytes, ts: Any) -> None: ...

    def processing_time(self) -> int: ...


class ValueState:
    """One JSON value per key. `set(None)` is `clear()`: an absent value reads as the default."""

    __slots__ = ("_op", "_sk")

    def __init__(self, op: ProcessHost, sk: bytes) -> None:
        self._op, self._sk = op, sk

    def get(self, default: Any = None) -> Any:
        raw = self._op.cached_state(self._sk)
        return default if raw is None else _loads(raw)

    def set(self, value: Any) -> None:
        self._op.set_state(self._sk, None if value is None else _dumps(value))

    def clear(self) -> None:
        self._op.set_state(self._sk, None)


class ListState:
    """A list of JSON values per key; `append` costs the size of the element, not of the list."""

    __slots__ = ("_op", "_sk")

    def __init__(self, op: ProcessHost, sk: bytes) -> None:
        self._op, self._sk = op, sk

    def get(self) -> list[Any]:
        """A copy of the list (mutating it does not change the state; use `set`)."""
        items = self._op.cached_state(self._sk)
        return _loads(b"[" + b",".join(items) + b"]") if items else []

    def append(self, value: Any) -> None:
        raw = _dumps(value)
        self._op.cached_state(self._sk).append(raw)
        self._op.state_changed(self._sk)

    def extend(self, values: Any) -> None:
        raws = [_dumps(v) for v in values]  # all or nothing
        self._op.cached_state(self._sk).extend(raws)
        self._op.state_changed(self._sk)

    def set(self, values: Any) -> None:
        self._op.set_state(self._sk, [_dumps(v) for v in values])

    def clear(self) -> None:
        self._op.set_state(self._sk, [])

    def __len__(self) -> int:
        return len(self._op.cached_state(self._sk))


def _check_map_key(k: Any) -> Any:
    if k is None or type(k) in (str, int, float, bool):
        return k
    raise TypeError(f"a map state key must be a str, int, float, bool or None, got {type(k).__name__}")


class MapState:
    """A map from JSON scalars (str, int, float, bool, None) to JSON values, per key."""

    __slots__ = ("_op", "_sk")

    def __init__(self, op: ProcessHost, sk: bytes) -> None:
        self._op, self._sk = op, sk

    def get(self, k: Any, default: Any = None) -> Any:
        raw = self._op.cached_state(self._sk).get(k)
        return default if raw is None else _loads(raw)

    def put(self, k: Any, value: Any) -> None:
        raw = _dumps(value)
        self._op.cached_state(self._sk)[_check_map_key(k)] = raw
        self._op.state_changed(self._sk)

    def remove(self, k: Any) -> None:
        d = self._op.cached_state(self._sk)
        if k in d:
            del d[k]
            self._op.state_changed(self._sk)

    def contains(self, k: Any) -> bool:
        return k in self._op.cached_state(self._sk)

    __contains__ = contains

    def items(self) -> list[tuple[Any, Any]]:
        return [(k, _loads(v)) for k, v in self._op.cached_state(self._sk).items()]

    def keys(self) -> list[Any]:
        return list(self._op.cached_state(self._sk))

    def values(self) -> list[Any]:
        return [_loads(v) for v in self._op.cached_state(self._sk).values()]

    def clear(self) -> None:
        self._op.set_state(self._sk, {})

    def __len__(self) -> int:
        return len(self._op.cached_state(self._sk))


class KeyedState:
    """`ctx.state`: named state of the current key. A name is one namespace per kind."""

    __slots__ = ("_op",)

    def __init__(self, op: ProcessHost) -> None:
        self._op = op

    def value(self, name: str) -> ValueState:
        return ValueState(self._op, self._op.state_key(KIND_VALUE, name))

    def list(self, name: str) -> ListState:
        return ListState(self._op, self._op.state_key(KIND_LIST, name))

    def map(self, name: str) -> MapState:
        return MapState(self._op, self._op.state_key(KIND_MAP, name))


def check_timestamp(ts: Any) -> int:
    try:
        t = operator.index(ts)
    except TypeError:
        raise TypeError(f"a timer timestamp must be an int (epoch milliseconds), "
                        f"got {type(ts).__name__}") from None
    if not _TS_MIN <= t <= _TS_MAX:
        raise ValueError(f"timer timestamp {t} is out of range")
    return t


class TimerService:
    """`ctx.timers`: timers of the current key. One timer per (key, domain, timestamp)."""

    __slots__ = ("_op",)

    def __init__(self, op: ProcessHost) -> None:
        self._op = op

    def register_event_time(self, ts: int) -> None:
        """Fire `on_timer` once the watermark reaches `ts` (watermark >= ts)."""
        self._op.register_timer(EVENT_TIME, ts)

    def register_processing_time(self, ts: int) -> None:
        """Fire `on_timer` once wall-clock time (epoch ms) reaches `ts`."""
        self._op.register_timer(PROCESSING_TIME, ts)

    def delete_event_time(self, ts: int) -> None:
        self._op.delete_timer(EVENT_TIME, ts)

    def delete_processing_time(self, ts: int) -> None:
        self._op.delete_timer(PROCESSING_TIME, ts)

    def current_processing_time(self) -> int:
        return self._op.processing_time()


class Context:
    """The `ctx` argument of `fn(ctx, key, value)` and `on_timer(ctx, key, timestamp)`.

    key, timestamp (the record's event time, or the timer's time), offset (the input offset
    emissions carry), watermark (in force before the record / at the firing), time_domain
    ("event_time" | "processing_time" in on_timer, None in fn), state, timers, emit(), and
    broadcast (`ctx.broadcast['rules']`: a broadcast source's current {key: value}).
    """

    __slots__ = ("_op", "broadcast", "key", "offset", "state", "time_domain", "timers", "timestamp",
                 "watermark")

    def __init__(self, op: ProcessHost) -> None:
        self._op = op
        self.key: Any = None
        self.timestamp = 0
        self.offset = -1
        self.watermark = 0
        self.time_domain: str | None = None
        self.state = KeyedState(op)
        self.timers = TimerService(op)
        # the broadcast sources' {key: value}, read-only: the graph builder sets its topology's
        self.broadcast = BroadcastStates()

    def emit(self, value: Any, key: Any = _CURRENT, timestamp: int | None = None) -> None:
        """Send (key, value, timestamp) downstream; defaults: the current key and timestamp."""
        self._op.out.append((self.key if key is _CURRENT else key, value,
                              self.timestamp if timestamp is None else timestamp, self.offset))
