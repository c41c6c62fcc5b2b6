"""Logs: one JSON object per line for collectors, or a readable line on a terminal, both with
the `extra` fields (task, partition, offset). `auto` picks text when stderr is a terminal.

A status line on the same terminal (the restore progress bar) is cleared before each record and
redrawn after it, so a log line never lands in the middle of the bar.

Every handler masks the config's secrets (processor/secrets.py): the filter cleans the record's
fields, and the formatters mask their finished line too, for text the filter cannot see.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Protocol, TextIO

from processor.secrets import RedactingFilter, redact

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str | None:
    """The traceback: already rendered (and masked) by the filter, or rendered here."""
    if record.exc_info:
        return formatter.formatException(record.exc_info)
    return record.exc_text or None


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        exc = _exception_text(self, record)
        if exc:
            out["exc"] = exc
        return redact(json.dumps(out, default=str))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={v}" for k, v in record.__dict__.items()
                          if k not in _STANDARD and not k.startswith("_"))
        base = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname:<7} {record.name}: " \
               f"{record.getMessage()}"
        text = f"{base} {extras}".rstrip()
        exc = _exception_text(self, record)
        if exc:
            text += "\n" + exc
        return redact(text)


class StatusLine(Protocol):
    """A line redrawn in place on the log stream (processor/observability/progress.py)."""

    def clear(self) -> None: ...

    def redraw(self) -> None: ...


class TerminalHandler(logging.StreamHandler):
    """A stream handler that steps around a status line: clear it, write the record, redraw."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self.status_line: StatusLine | None = None

    def emit(self, record: logging.LogRecord) -> None:  # called under the handler's lock
        line = self.status_line
        if line is not None:
            line.clear()
        super().emit(record)
        if line is not None:
            line.redraw()


def resolve_format(fmt: str, stream: TextIO) -> str:
    """`auto`: text for a person at a terminal, JSON for everything else (collectors, tests)."""
    if fmt != "auto":
        return fmt
    isatty = getattr(stream, "isatty", None)
    return "text" if isatty is not None and isatty() else "json"


def setup_logging(level: str = "INFO", fmt: str = "auto") -> None:
    handler = TerminalHandler(sys.stderr)
    fmt = resolve_format(fmt, sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def attach_status_line(line: StatusLine | None) -> None:
    """Let the installed terminal handlers step around `line` (None detaches it)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, TerminalHandler):
            handler.status_line = line
