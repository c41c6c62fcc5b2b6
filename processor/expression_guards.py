"""Bounds on the expression operations whose cost is not bounded by the size of their inputs.

An expression runs per record on the worker's only processing thread: `2 ** value['n']` with
n = 10**9, `'-' * value['width']`, `1 << n`, `list(range(n))` or `math.factorial(n)` would stall
the worker or exhaust its memory instead of failing one record. The expression compiler
rewrites `**`, `<<` and `*` into calls of the functions below (and `range` / `math` are these
versions), which raise ValueError when the result would exceed a limit: an ordinary record
error, handled by `on_error` like any other. Within the limits they cost one call (~45 ns).

Not bounded here: nested iteration (`[0 for a in range(n) for b in range(n)]`), padding
methods such as str.ljust(n), widths in format specs or %-formatting, math.prod.
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable
from typing import Any

MAX_INT_BITS = 100_000  # ~30,000 decimal digits: computed in well under a millisecond
MAX_ITEMS = 1_000_000  # characters, bytes or items of one repeated sequence or range
MAX_COMBINATORIAL_ARG = 10_000  # math.factorial(10_000) has ~118,000 bits

_REPEATABLE = frozenset({str, bytes, bytearray, list, tuple})


def _too_big(what: str, limit: int) -> ValueError:
    return ValueError(f"expression limit: {what} would exceed {limit:,}")


def guarded_pow(base: Any, exponent: Any) -> Any:
    if (isinstance(base, int) and isinstance(exponent, int) and exponent > 0
            and (abs(base).bit_length() - 1) * exponent > MAX_INT_BITS):
        raise _too_big("the bits of an integer power", MAX_INT_BITS)
    return base ** exponent


def guarded_lshift(value: Any, shift: Any) -> Any:
    if (isinstance(value, int) and isinstance(shift, int) and value
            and value.bit_length() + shift > MAX_INT_BITS):
        raise _too_big("the bits of an integer shift", MAX_INT_BITS)
    return value << shift


def guarded_mul(a: Any, b: Any) -> Any:
    """`a * b`; checks only sequence repetition (a product of numbers is as big as its inputs)."""
    if a.__class__ in _REPEATABLE or b.__class__ in _REPEATABLE:
        seq, times = (a, b) if a.__class__ in _REPEATABLE else (b, a)
        if isinstance(times, int) and len(seq) * times > MAX_ITEMS:
            raise _too_big("the length of a repeated sequence", MAX_ITEMS)
    return a * b


def bounded_range(*args: Any) -> range:
    """`range`, refusing more than MAX_ITEMS steps (iterating them is the cost)."""
    r = range(*args)
    try:
        steps = len(r)
    except OverflowError:  # more than sys.maxsize
        steps = MAX_ITEMS + 1
    if steps > MAX_ITEMS:
        raise _too_big("the length of a range", MAX_ITEMS)
    return r


def _bounded_args(fn: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        if any(isinstance(a, int) and a > MAX_COMBINATORIAL_ARG for a in args):
            raise _too_big(f"the argument of math.{fn.__name__}", MAX_COMBINATORIAL_ARG)
        return fn(*args)

    call.__name__ = call.__qualname__ = fn.__name__
    call.__doc__ = fn.__doc__
    return call


def bounded_math() -> types.SimpleNamespace:
    """The public names of `math`, with factorial, comb and perm bounded."""
    names = {n: getattr(math, n) for n in dir(math) if not n.startswith("_")}
    for n in ("factorial", "comb", "perm"):
        names[n] = _bounded_args(names[n])
    return types.SimpleNamespace(**names)
