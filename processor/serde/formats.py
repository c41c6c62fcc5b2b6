"""Key/value formats. Decoding runs once per record on the hot path, so each is one C call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from processor.serde.errors import SchemaError
from processor.spec.formats import FORMATS, SCHEMALESS_FORMATS


@dataclass(frozen=True, slots=True)
class Serde:
    """A named pair of encode/decode functions; `None` always maps to `None` (tombstones)."""

    name: str
    encode: Callable[[Any], bytes | None]
    decode: Callable[[bytes | None], Any]


def _json_decode(data: bytes | None) -> Any:
    return None if data is None else orjson.loads(data)


def _json_encode(obj: Any) -> bytes | None:
    return None if obj is None else orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS)


def _string_decode(data: bytes | None) -> str | None:
    return None if data is None else data.decode("utf-8")


def _string_encode(obj: Any) -> bytes | None:
    if obj is None:
        return None
    if isinstance(obj, str):
        return obj.encode("utf-8")
    if isinstance(obj, bytes):
        return obj
    return str(obj).encode("utf-8")


def _bytes_decode(data: bytes | None) -> bytes | None:
    return data


def _bytes_encode(obj: Any) -> bytes | None:
    if obj is None or isinstance(obj, bytes):
        return obj
    if isinstance(obj, str):
        return obj.encode("utf-8")
    if isinstance(obj, bytearray | memoryview):
        return bytes(obj)
    raise TypeError(f"bytes format needs bytes or str, got {type(obj).__name__}")


_SERDES = {
    "json": Serde("json", _json_encode, _json_decode),
    "string": Serde("string", _string_encode, _string_decode),
    "bytes": Serde("bytes", _bytes_encode, _bytes_decode),
}


def compact(b: bytes) -> bytes:
    """A copy of `b` that holds just its bytes: orjson (3.13) hands out bytes objects that keep
    a 4 KiB buffer each, which anything kept (a cached key, a buffered value) would keep alive."""
    return bytes(memoryview(b))


def compact_json(obj: Any) -> bytes:
    """`obj` as JSON bytes that something keeps (a cached or buffered value, a write awaiting
    the commit): orjson's own bytes would hold 4 KiB each."""
    return compact(orjson.dumps(obj))


def _json_state_key(obj: Any) -> bytes | None:
    """A JSON key as a store holds it: a compact copy (4 KiB per cached key otherwise)."""
    return None if obj is None else compact(orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS))


def state_key_serde(fmt: str) -> Serde:
    """The serde of a stateful step's keys: `serde_for`'s, with keys that may stay cached."""
    serde = serde_for(fmt)
    return Serde(fmt, _json_state_key, serde.decode) if fmt == "json" else serde


def serde_for(fmt: str) -> Serde:
    """Look up a schema-less serde by format name (raw codec exceptions, for the hot path)."""
    try:
        return _SERDES[fmt]
    except KeyError:
        if fmt in FORMATS:
            raise SchemaError(f"format {fmt!r} needs a schema: build it with build_serde") from None
        raise SchemaError(f"unknown format {fmt!r} (known: {', '.join(SCHEMALESS_FORMATS)})") from None


# Inline forms of the codecs, for batch functions generated once per task (task.py, worker.py):
# on the hot path a Python-level call per key and per value costs more than the decoding itself.
INLINE_GLOBALS: dict[str, Any] = {
    "_loads": orjson.loads, "_dumps": orjson.dumps, "_OPT": orjson.OPT_NON_STR_KEYS,
    "_string_encode": _string_encode, "_bytes_encode": _bytes_encode,
}


def inline_decode(fmt: str, src: str, tmp: str) -> str:
    """An expression decoding the bytes expression `src` (evaluated once, bound to `tmp`)."""
    serde_for(fmt)
    if fmt == "json":
        return f"(_loads({tmp}) if ({tmp} := {src}) is not None else None)"
    if fmt == "string":
        return f"({tmp}.decode() if ({tmp} := {src}) is not None else None)"
    return src


def inline_encode(fmt: str, var: str) -> str:
    """An expression encoding the object in variable `var`."""
    serde_for(fmt)
    if fmt == "json":
        return f"(_dumps({var}, None, _OPT) if {var} is not None else None)"
    if fmt == "string":
        return f"({var}.encode() if {var}.__class__ is str else _string_encode({var}))"
    return f"({var} if {var}.__class__ is bytes else _bytes_encode({var}))"
