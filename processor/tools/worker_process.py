"""`python -m processor run` as a subprocess: how the integration tests, the benchmarks and the
demo drive real workers from outside.

One place builds the command line, starts the process with its output in a log file, signals it
(its whole process group when it runs in a session of its own, as under py-spy), and reads its
JSON log lines back. Two ways to capture output:
- straight to the file (stdout and stderr): nothing in this process can slow the worker down;
  events are parsed from the file when asked for;
- `on_line`: stderr (where the worker logs) through a pipe, written to the file by a reader
  thread that hands every line over as it arrives; stdout is discarded. The benchmarks use it
  for live progress and for each event's arrival time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[2]


def worker_command(topology: Path, bootstrap: str, state_dir: Path, *,
                   guarantee: str | None = None, commit_interval: str | None = None,
                   log_format: str = "json", worker_id: str | None = None,
                   stop_when_idle: str | None = None, metrics_port: int | None = None,
                   config: Path | None = None) -> list[str]:
    """The argv of one worker; options left None take the worker's configured defaults."""
    cmd = [sys.executable, "-m", "processor", "run", str(topology),
           "--bootstrap-servers", bootstrap, "--state-dir", str(state_dir),
           "--log-format", log_format]
    for flag, value in (("--guarantee", guarantee), ("--commit-interval", commit_interval),
                        ("--worker-id", worker_id), ("--stop-when-idle", stop_when_idle),
                        ("--metrics-port", metrics_port), ("--config", config)):
        if value is not None:
            cmd += [flag, str(value)]
    return cmd


def parse_event(line: bytes) -> dict[str, Any] | None:
    """One JSON log line as a dict; None for anything else (librdkafka chatter, tracebacks)."""
    if not line.startswith(b"{"):
        return None
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return event if isinstance(event, dict) else None


class WorkerProcess:
    """A started worker subprocess with its output in `log_path` (see the module docstring)."""

    def __init__(self, cmd: list[str], log_path: Path, env: Mapping[str, str], *,
                 new_session: bool = False,
                 on_line: Callable[[bytes, float], None] | None = None) -> None:
        self.log_path = log_path
        self.new_session = new_session
        self.on_line = on_line
        self._reader: threading.Thread | None = None
        if on_line is None:
            with open(log_path, "wb") as log:
                self.proc = subprocess.Popen(cmd, cwd=ROOT, env=dict(env), stdout=log,
                                             stderr=subprocess.STDOUT,
                                             start_new_session=new_session)
        else:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=dict(env), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                         start_new_session=new_session)
            self._reader = threading.Thread(target=self._follow, daemon=True)
            self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _follow(self) -> None:
        assert self.proc.stderr is not None and self.on_line is not None
        with open(self.log_path, "wb") as out:
            for line in self.proc.stderr:
                out.write(line)
                self.on_line(line, time.time())

    def join_reader(self, timeout: float = 5) -> None:
        """After the exit: wait until the reader thread has written the last lines."""
        if self._reader is not None:
            self._reader.join(timeout)

    # control

    def poll(self) -> int | None:
        return self.proc.poll()

    def wait(self, timeout: float = 120) -> int:
        """The exit code; subprocess.TimeoutExpired if it is still running after `timeout`."""
        code = self.proc.wait(timeout)
        self.join_reader()
        return code

    def signal(self, sig: int) -> None:
        """Send `sig` to the worker (to its process group when it has a session of its own)."""
        if self.poll() is not None:
            return
        if self.new_session:
            with suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
        else:
            self.proc.send_signal(sig)

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM (a graceful stop), then wait for the exit."""
        self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        if self.poll() is None:
            self.signal(signal.SIGKILL)
            self.wait(10)

    # the log

    def logs(self) -> list[dict[str, Any]]:
        """Every JSON log line so far."""
        return [e for e in map(parse_event, self.log_path.read_bytes().splitlines()) if e is not None]

    def find(self, msg: str) -> list[dict[str, Any]]:
        return [e for e in self.logs() if e.get("msg") == msg]

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def wait_for_log(self, msg: str, timeout: float = 60, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.find(msg)) >= count:
                return
            if self.poll() is not None:
                raise AssertionError(f"worker exited ({self.proc.returncode}) before {msg!r}:\n"
                                     + self.log_text())
            time.sleep(0.2)
        raise AssertionError(f"no {msg!r} in worker log within {timeout}s:\n{self.log_text()}")
