"""Stateless steps: filter, map, flat_map, key_by and free-form python steps."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from processor.operators.base import Batch, RecordFn, Stateless


class Filter(Stateless):
    """Keep records for which the predicate is truthy."""

    def __init__(self, name: str, predicate: RecordFn) -> None:
        super().__init__(name)
        self.predicate = predicate

    def _batch(self, batch: Batch) -> Batch:
        pred = self.predicate
        return [r for r in batch if pred(r[0], r[1], r[2])]


class MapValue(Stateless):
    """Replace the value with `fn(key, value, timestamp)`; the key is unchanged."""

    def __init__(self, name: str, fn: RecordFn) -> None:
        super().__init__(name)
        self.fn = fn

    def _batch(self, batch: Batch) -> Batch:
        fn = self.fn
        return [(k, fn(k, v, t), t, o) for k, v, t, o in batch]


class FlatMap(Stateless):
    """Replace each record with one record per element of `fn(key, value, timestamp)`."""

    def __init__(self, name: str, fn: RecordFn) -> None:
        super().__init__(name)
        self.fn = fn

    def _batch(self, batch: Batch) -> Batch:
        fn = self.fn
        return [(k, x, t, o) for k, v, t, o in batch for x in _iterable(fn(k, v, t))]


class KeyBy(Stateless):
    """Set the key to `fn(key, value, timestamp)`. A later stateful step repartitions on it."""

    def __init__(self, name: str, fn: RecordFn) -> None:
        super().__init__(name)
        self.fn = fn

    def _batch(self, batch: Batch) -> Batch:
        fn = self.fn
        return [(fn(k, v, t), v, t, o) for k, v, t, o in batch]


class PythonStep(Stateless):
    """`fn(key, value)` returns None (drop) or an iterable of `(key, value)` pairs."""

    def __init__(self, name: str, fn: Callable[[Any, Any], Iterable[tuple[Any, Any]] | None]) -> None:
        super().__init__(name)
        self.fn = fn

    def _batch(self, batch: Batch) -> Batch:
        fn = self.fn
        out: Batch = []
        for k, v, t, o in batch:
            result = fn(k, v)
            if result is None:
                continue
            for pair in result:
                nk, nv = pair
                out.append((nk, nv, t, o))
        return out


def _iterable(x: Any) -> Iterable[Any]:
    if x is None:
        return ()
    if isinstance(x, str | bytes | dict):
        raise TypeError(f"flat_map must return a list or other iterable of values, got {type(x).__name__}")
    return x
