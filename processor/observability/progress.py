"""A one-line progress bar on a terminal (restore in `processor run`): redrawn in place, at
most a few times a second, and finished with a newline. The log handler clears it before a
record and redraws it after (processor/observability/logging.py), so the two never interleave."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


class ProgressBar:
    def __init__(self, label: str, out: TextIO | None = None, width: int = 30,
                 min_interval_s: float = 0.2) -> None:
        self.label, self.out, self.width = label, out or sys.stderr, width
        self.min_interval_s = min_interval_s
        self._last = 0.0
        self._shown = False
        self._text = ""
        self._lock = threading.RLock()

    def update(self, done: int, total: int | None, detail: str = "") -> None:
        now = time.monotonic()
        if now - self._last < self.min_interval_s:
            return
        self._last = now
        if total:
            frac = min(1.0, done / total)
            filled = int(frac * self.width)
            bar = "#" * filled + "." * (self.width - filled)
            text = f"{self.label} [{bar}] {frac * 100:5.1f}% {done:,}/{total:,} records"
        else:
            text = f"{self.label} {done:,} records"
        with self._lock:
            self._text = f"{text} {detail}".rstrip()
            self._shown = True
            self.redraw()

    def clear(self) -> None:
        """Blank the bar's line (before a log record is written on the same stream)."""
        with self._lock:
            if self._shown:
                self.out.write("\r\x1b[K")
                self.out.flush()

    def redraw(self) -> None:
        with self._lock:
            if self._shown:
                self.out.write(f"\r{self._text}\x1b[K")
                self.out.flush()

    def finish(self, message: str) -> None:
        with self._lock:
            if self._shown:
                self.out.write(f"\r{message}\x1b[K\n")
                self.out.flush()
            self._shown = False
            self._last = 0.0
