"""The savepoint directory: what `processor savepoint create` writes and `restore` reads.

Plain files, readable with `cat`, `jq` and `head`:

    DIR/manifest.json                          what the savepoint holds (see `Manifest`)
    DIR/stores/<store>/<partition>.jsonl       one store entry a line
    DIR/inflight/<repartition topic>/<partition>.jsonl
                                               the records committed upstream, not yet consumed

A line is `{"key": K, "value": V}` where K and V are the JSON of the record's bytes when those
bytes are JSON written compactly (re-encoding gives the same bytes); else `"key_text"` /
`"value_text"` (a string) when they are printable UTF-8 (e.g. a string-format key), else
`"key_b64"` / `"value_b64"` (base64): a restore writes back exactly the bytes it read. In-flight lines also
carry `"offset"` (in the old topic) and `"timestamp"` (ms).

A savepoint is written into a temporary sibling directory renamed to DIR at the end: a crash
leaves no half savepoint under DIR, only a `.DIR.partial-*` directory to remove.
"""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from processor.errors import ProcessorError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


class SavepointError(ProcessorError):
    """A savepoint cannot be written, read, or used as asked."""


def encode_bytes(name: str, data: bytes | None) -> dict[str, Any]:
    """`{name: json}` when `data` is compact JSON (byte-exact round trip), else `{name_text: ...}`
    when it is printable UTF-8, else `{name_b64: ...}`."""
    if data is None:
        return {name: None}
    try:
        parsed = orjson.loads(data)
        if orjson.dumps(parsed) == data:
            return {name: parsed}
    except orjson.JSONDecodeError:
        pass
    try:
        text = data.decode()
        if text.isprintable():
            return {f"{name}_text": text}
    except UnicodeDecodeError:
        pass
    return {f"{name}_b64": base64.b64encode(data).decode()}


def decode_bytes(line: dict[str, Any], name: str) -> bytes | None:
    """The bytes `encode_bytes` stored under `name`."""
    if f"{name}_b64" in line:
        return base64.b64decode(line[f"{name}_b64"])
    if f"{name}_text" in line:
        return line[f"{name}_text"].encode()
    value = line.get(name)
    return None if value is None else orjson.dumps(value)


def entry_line(key: bytes, value: bytes | None, **extra: Any) -> bytes:
    return orjson.dumps({**encode_bytes("key", key), **encode_bytes("value", value), **extra}) + b"\n"


def store_path(root: Path, store: str, partition: int) -> Path:
    return root / "stores" / store / f"{partition}.jsonl"


def inflight_path(root: Path, topic: str, partition: int) -> Path:
    return root / "inflight" / topic / f"{partition}.jsonl"


def read_lines(path: Path) -> Iterator[dict[str, Any]]:
    """The lines of one store or in-flight file (none when the file is absent: nothing there)."""
    if not path.exists():
        return
    with path.open("rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                yield orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise SavepointError(f"{path}:{number}: not a JSON line") from None


def read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST
    if not path.is_file():
        raise SavepointError(f"{root}: not a savepoint (no {MANIFEST})")
    try:
        manifest = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise SavepointError(f"{path}: not JSON ({exc})") from None
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise SavepointError(f"{path}: format version {version!r}, this processor reads "
                             f"{FORMAT_VERSION}")
    return manifest


def check_new(root: Path) -> None:
    """`root` can become a savepoint: it does not exist, its parent does."""
    if root.exists():
        raise SavepointError(f"{root} already exists: choose a new directory for the savepoint")
    if not root.parent.is_dir():
        raise SavepointError(f"{root.parent}: no such directory")


class SavepointWriter:
    """Writes a savepoint into a temporary directory; `commit(manifest)` renames it to `root`.

    Use as a context manager: leaving it without `commit` (an error) removes the temporary
    directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        check_new(root)
        self.tmp = root.parent / f".{root.name}.partial-{os.getpid()}"
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir()
        self._open: dict[Path, IO[bytes]] = {}
        self.bytes_written = 0

    def __enter__(self) -> SavepointWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        for f in self._open.values():
            f.close()
        self._open.clear()
        if self.tmp.exists():
            shutil.rmtree(self.tmp, ignore_errors=True)

    def _file(self, path: Path) -> IO[bytes]:
        f = self._open.get(path)
        if f is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            f = self._open[path] = path.open("wb")
        return f

    def store_entry(self, store: str, partition: int, key: bytes, value: bytes | None) -> None:
        line = entry_line(key, value)
        self._file(store_path(self.tmp, store, partition)).write(line)
        self.bytes_written += len(line)

    def inflight_record(self, topic: str, partition: int, offset: int, key: bytes | None,
                        value: bytes | None, timestamp: int | None) -> None:
        line = orjson.dumps({**encode_bytes("key", key), **encode_bytes("value", value),
                             "offset": offset, "timestamp": timestamp}) + b"\n"
        self._file(inflight_path(self.tmp, topic, partition)).write(line)
        self.bytes_written += len(line)

    def commit(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Flush every file to disk, write the manifest, then rename the directory into place;
        returns the manifest as written."""
        for f in self._open.values():
            f.flush()
            os.fsync(f.fileno())
            f.close()
        self._open.clear()
        manifest = {"format_version": FORMAT_VERSION, **manifest}
        body = orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n"
        with (self.tmp / MANIFEST).open("wb") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.rename(self.tmp, self.root)
        dir_fd = os.open(self.root.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return manifest
