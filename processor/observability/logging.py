"""Structured logs: one JSON object per line, with the `extra` fields (task, partition, offset).

Every handler masks the config's secrets (processor/secrets.py): the filter cleans the record's
fields, and the formatters mask their finished line too, for text the filter cannot see.
"""

from __future__ import annotations

import json
import logging
import sys
import time

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


def setup_logging(level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
