"""Writing a file sink atomically: the target appears only when the run commits, whole.

Rows go to a temp file next to the target (`.<name>.<pid>.tmp`, same directory so the rename
is atomic); `commit` flushes and fsyncs it, renames it over the target and fsyncs the
directory. A run that fails or is killed before `commit` leaves the old target untouched
(or none), and a rerun replaces the target instead of adding to it. A temp file left by a
killed process is removed by the next writer of the same target (one whose pid is no longer
running; a recycled pid only makes a leftover stay).
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from processor.runtime.files.encoders import encoder_for
from processor.runtime.files.errors import FileOutputError
from processor.spec.bounded import FileSinkSpec


def sink_row(spec: FileSinkSpec, key: Any, value: Any) -> dict[str, Any]:
    """The row an output record becomes: its value if that is a mapping, else
    `{"value": value}`; with `spec.key`, the record's key in that column too (over a value
    field of the same name). The value itself is never changed."""
    row = value if isinstance(value, dict) else {"value": value}
    if spec.key is None:
        return row
    return {**row, spec.key: key}


class FileSinkWriter:
    """One run's output to one file: `write` rows, then `commit` (or `abort`)."""

    def __init__(self, spec: FileSinkSpec, base: Path) -> None:
        target = Path(spec.path).expanduser()
        self.target = target if target.is_absolute() else base / target
        if self.target.is_dir():
            raise FileOutputError(f"sink {spec.path!r}: {str(self.target)!r} is a directory, "
                                  "not a file")
        try:
            self.target.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(self.target)
            self.temp = self.target.parent / f".{self.target.name}.{os.getpid()}.tmp"
            self._file = open(self.temp, "xb")  # noqa: SIM115 (closed by commit or abort)
        except FileExistsError as exc:
            raise FileOutputError(f"sink {spec.path!r}: this process already writes "
                                  f"{str(self.target)!r} (two sinks to one file?)") from exc
        except OSError as exc:
            raise FileOutputError(f"sink {spec.path!r}: cannot write in "
                                  f"{str(self.target.parent)!r}: {exc.strerror or exc}") from exc
        self._encoder = encoder_for(spec.file_format, self._file, str(self.target))
        self._state: Literal["open", "failed", "committed", "aborted"] = "open"

    def write(self, rows: list[dict[str, Any]]) -> None:
        """Add rows. After a write fails (a row that does not fit, a full disk) part of the
        rows may be in the temp file: the writer can then only be aborted."""
        self._expect_open("written to")
        try:
            self._encoder.write(rows)
        except OSError as exc:
            self._state = "failed"
            raise FileOutputError(f"{self.target}: cannot write: {exc.strerror or exc}") from exc
        except BaseException:
            self._state = "failed"
            raise

    def commit(self) -> None:
        """Make the rows the target's content, atomically and durably."""
        self._expect_open("committed")
        try:
            self._encoder.finish()
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self.temp, self.target)
        except OSError as exc:
            self.abort()
            raise FileOutputError(f"{self.target}: cannot commit: {exc.strerror or exc}") from exc
        except BaseException:
            self.abort()
            raise
        self._state = "committed"
        try:
            _fsync_dir(self.target.parent)
        except OSError as exc:
            raise FileOutputError(f"{self.target}: written, but its directory could not be "
                                  f"synced to disk: {exc.strerror or exc}") from exc

    def abort(self) -> None:
        """Drop the rows; the target keeps what it had. Does nothing after a commit."""
        if self._state in ("committed", "aborted"):
            return
        self._state = "aborted"
        if not self._file.closed:
            self._encoder.discard()
            self._file.close()
        self.temp.unlink(missing_ok=True)

    def _expect_open(self, what: str) -> None:
        if self._state != "open":
            after = {"failed": "a failed write", "committed": "commit", "aborted": "abort"}
            raise FileOutputError(f"{self.target}: {what} after {after[self._state]}")

    def __enter__(self) -> FileSinkWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.abort()


def remove_stale_temps(target: Path) -> list[Path]:
    """Remove the temp files of `target` left by processes that no longer run; returns them."""
    prefix, removed = f".{target.name}.", []
    for path in target.parent.iterdir():
        name = path.name
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        pid = name[len(prefix):-len(".tmp")]
        if pid.isdigit() and not _running(int(pid)):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
