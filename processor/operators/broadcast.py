"""Broadcast state: every worker holds a whole low-volume stream (rules, config) as a dict.

The runtime's table follower feeds raw (key, value) pairs in topic order; this registry decodes
them into one `{key: value}` dict per broadcast source, which expressions (`broadcast[name]`)
and process functions read. Readers get a read-only view: the state follows the topic and
nothing else may change it. A record that does not decode is skipped and counted, not raised:
one bad rule must not stop every worker's processing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

log = logging.getLogger("processor.broadcast")

_LOG_EVERY = 100  # decode failures per source between two warnings


class BroadcastState:
    """Named broadcast states, owned by the worker; no Kafka here (testable with lists)."""

    def __init__(self) -> None:
        self._data: dict[str, dict[Any, Any]] = {}
        self._views: dict[str, Mapping[Any, Any]] = {}
        self._decoders: dict[str, tuple[Callable[[bytes], Any], Callable[[bytes], Any]]] = {}
        self.version: dict[str, int] = {}  # bumped on every applied update
        self.errors: dict[str, int] = {}   # records skipped because they did not decode

    def declare(self, name: str, key_decode: Callable[[bytes], Any],
                value_decode: Callable[[bytes], Any]) -> None:
        """Register a broadcast source (empty until updated); re-declaring resets it."""
        self._data[name] = data = {}
        self._views[name] = MappingProxyType(data)
        self._decoders[name] = (key_decode, value_decode)
        self.version[name] = 0
        self.errors[name] = 0

    def update(self, name: str, pairs: list[tuple[bytes, bytes | None]]) -> None:
        """Apply raw pairs in order: set the decoded value, or delete on a None value."""
        data = self._data.get(name)
        if data is None:
            raise self._unknown(name)
        key_decode, value_decode = self._decoders[name]
        for raw_key, raw_value in pairs:
            try:
                key = key_decode(raw_key)
                if raw_value is None:
                    data.pop(key, None)
                else:
                    data[key] = value_decode(raw_value)
            except Exception as exc:  # any decoder error: skip the record, keep the rest
                self._failed(name, raw_key, exc)
        self.version[name] += 1

    def _failed(self, name: str, raw_key: bytes, exc: Exception) -> None:
        n = self.errors[name] = self.errors[name] + 1
        if n % _LOG_EVERY == 1:  # the 1st, 101st, ... failure
            log.warning("broadcast record skipped: it does not decode", extra={
                "source": name, "key": raw_key[:200] if raw_key is not None else None,
                "error": f"{type(exc).__name__}: {exc}", "errors": n})

    def __getitem__(self, name: str) -> Mapping[Any, Any]:
        """The current state of `name`, read-only and live (it changes as updates arrive)."""
        view = self._views.get(name)
        if view is None:
            raise self._unknown(name)
        return view

    def __contains__(self, name: object) -> bool:
        return name in self._data

    def names(self) -> list[str]:
        return sorted(self._data)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Per source: size, version, decode errors and a copy of the entries (describe/debug)."""
        return {name: {"keys": len(data), "version": self.version[name],
                       "errors": self.errors[name], "entries": dict(data)}
                for name, data in self._data.items()}

    def _unknown(self, name: str) -> KeyError:
        declared = ", ".join(sorted(self._data)) or "none"
        return KeyError(f"no broadcast state {name!r} (declared: {declared})")
