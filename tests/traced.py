"""Memory a piece of test code leaves allocated: what a cache or a buffer it filled keeps."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def traced_bytes() -> Iterator[Callable[[], int]]:
    """`with traced_bytes() as kept:` ... `kept()`: the bytes of Python allocations made inside
    the block and still alive at the call (tracemalloc, on for the block only)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        yield lambda: tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
