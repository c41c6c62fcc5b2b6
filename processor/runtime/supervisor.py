"""`processor run --processes N`: N worker processes of one topology under one command.

A worker is one Python process and uses one core; a host with more cores runs more group
members. Each member is a plain `processor run` subprocess with its own worker id
(`<worker_id>-<i>`, hence its own transactional id), its own state directory
(`<state_dir>/member-<i>`: RocksDB locks its directories) and its own HTTP port
(`metrics_port + i`): no member shares anything with another but the broker, so the group
protocol, fencing and the state API (which already proxies between workers through the worker
directory) work as between hosts. The supervisor only starts, signals and reaps them:
- SIGTERM/SIGINT is forwarded to every member, which stops as it does alone (final checkpoint,
  leaves the group); the supervisor waits for all of them;
- a member killed by a signal or crashing (exit 1) is restarted after a backoff; one exiting 0
  (idle, the end of its topic ranges, POST /stop) stays stopped; any other code (2: a
  configuration or Kafka error, 3: a record that cannot be processed) would only repeat, so the
  others are stopped and the supervisor exits with it;
- the exit code is 0 when every member's last exit was 0, else the highest (a member killed by
  signal S counts 128 + S, as a shell reports it; one killed by the stop signal it was sent
  counts 0: it had not begun processing, as the worker handles that signal from then on).
A member asks Linux to send it SIGTERM when the supervisor dies (`follow_supervisor`), so none
outlives a killed supervisor.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from processor.errors import ProcessorError
from processor.runtime.config import WorkerConfig
from processor.runtime.kafka.clients import admin_config
from processor.runtime.kafka.topics import TopicError, partition_counts

log = logging.getLogger("processor.supervisor")

SUPERVISOR_PID = "PROCESSOR_SUPERVISOR_PID"
"""Set in a member's environment: the pid of the supervisor it belongs to."""
BACKOFF_S = (1.0, 30.0)  # a restart waits 1 s, doubled per quick failure, at most 30 s
STABLE_S = 60.0  # a member that ran this long before dying restarts after the shortest wait
POLL_S = 0.1
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class MemberPlan:
    """What makes member `index` a group member of its own."""
    index: int
    worker_id: str
    state_dir: Path
    metrics_port: int | None
    advertised_url: str | None

    def flags(self) -> list[str]:
        """`processor run` flags over the supervisor's own (the last occurrence wins)."""
        out = ["--processes", "1", "--worker-id", self.worker_id, "--state-dir", str(self.state_dir)]
        if self.metrics_port is not None:
            out += ["--metrics-port", str(self.metrics_port)]
        return out


def plan_members(config: WorkerConfig, processes: int) -> list[MemberPlan]:
    """The members of a supervisor running `processes` workers with `config`."""
    if processes < 1:
        raise ProcessorError(f"--processes must be at least 1, not {processes}")
    port = config.metrics_port
    if config.advertised_url and not port:
        raise ProcessorError("advertised_url with --processes needs a fixed metrics_port (member "
                             "i advertises the URL with port metrics_port + i)")
    if port and port + processes - 1 > 65535:
        raise ProcessorError(f"metrics_port {port} + {processes - 1} is above 65535: choose a "
                             "lower --metrics-port")
    base_id = config.resolved_worker_id()
    plans = []
    for i in range(processes):
        member_port = port + i if port else port  # 0: each member binds a free port of its own
        url = _with_port(config.advertised_url, member_port) if config.advertised_url else None
        plans.append(MemberPlan(i, f"{base_id}-{i}", config.state_dir / f"member-{i}",
                                member_port, url))
    return plans


def _with_port(url: str, port: int | None) -> str:
    parts = urllib.parse.urlsplit(url)
    try:
        given = parts.port
    except ValueError:
        raise ProcessorError(f"advertised_url {url!r} has an invalid port") from None
    host = parts.netloc[: -len(f":{given}")] if given is not None else parts.netloc
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{host}:{port}"))


def member_argv(argv: Sequence[str], plan: MemberPlan) -> list[str]:
    """The supervisor's own `processor` arguments with the member's flags after them (before a
    `--`, after which everything is positional)."""
    args = list(argv)
    at = args.index("--") if "--" in args else len(args)
    return [sys.executable, "-m", "processor", *args[:at], *plan.flags(), *args[at:]]


def member_env(env: Mapping[str, str], plan: MemberPlan) -> dict[str, str]:
    out = {**env, SUPERVISOR_PID: str(os.getpid())}
    if plan.advertised_url is not None:  # no flag for it: the environment beats the file
        out["PROCESSOR_ADVERTISED_URL"] = plan.advertised_url
    return out


def exit_code(codes: Sequence[int]) -> int:
    """0 when every member exited 0, else the highest code; killed by signal S: 128 + S."""
    return max((128 - c if c < 0 else c for c in codes), default=0)


def restartable(code: int) -> bool:
    """A crash (killed by a signal, or an unexpected exception: exit 1) may not repeat; the
    other non-zero codes are decisions of the worker (configuration, Kafka, a bad record)."""
    return code < 0 or code == 1


def idle_members(processes: int, partitions: Mapping[str, int]) -> int:
    """How many members get no partition: a topic's partition goes to one member at a time."""
    return max(0, processes - max(partitions.values(), default=processes))


def _describe(code: int) -> str:
    if code < 0:
        with suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit {code}"


class Member:
    """One member process and its restart schedule."""

    def __init__(self, plan: MemberPlan, argv: list[str], env: dict[str, str]) -> None:
        self.plan, self.argv, self.env = plan, argv, env
        self.proc: subprocess.Popen[bytes] | None = None
        self.code: int | None = None  # the last exit code
        self.started_at = 0.0
        self.restart_at: float | None = None
        self.backoff = BACKOFF_S[0]
        self.sent: set[int] = set()  # the signals sent to the current process

    def start(self, spawn: Callable[..., Any]) -> None:
        self.proc = spawn(self.argv, env=self.env)
        self.started_at, self.restart_at, self.sent = time.monotonic(), None, set()
        log.info("member started", extra={
            "member": self.plan.index, "pid": self.proc.pid, "worker_id": self.plan.worker_id,
            "state_dir": str(self.plan.state_dir), "metrics_port": self.plan.metrics_port,
            "advertised_url": self.plan.advertised_url})

    @property
    def running(self) -> bool:
        return self.proc is not None and self.code is None

    def reap(self) -> int | None:
        """The exit code when the process just ended, else None."""
        if self.proc is None or self.code is not None:
            return None
        self.code = self.proc.poll()
        return self.code

    def signal(self, sig: int) -> None:
        if self.running and self.proc is not None:
            self.sent.add(sig)
            with suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    def stopped_early(self) -> bool:
        """Killed by the signal it was sent to stop (or 128 + it, as Python's KeyboardInterrupt
        exits): it had not begun processing, since the worker handles SIGTERM/SIGINT from then
        on, so it had nothing to commit."""
        return self.code is not None and any(self.code in (-s, 128 + s) for s in self.sent)

    def schedule_restart(self, now: float) -> float:
        if now - self.started_at >= STABLE_S:
            self.backoff = BACKOFF_S[0]
        wait, self.backoff = self.backoff, min(self.backoff * 2, BACKOFF_S[1])
        self.restart_at = now + wait
        return wait

    def restart_due(self, now: float) -> bool:
        return self.restart_at is not None and now >= self.restart_at

    def restart(self, spawn: Callable[..., Any]) -> None:
        self.code = None
        self.start(spawn)


class Supervisor:
    """Runs the members until all have exited (see the module docstring for the rules)."""

    def __init__(self, members: list[Member], *,
                 spawn: Callable[..., Any] = subprocess.Popen) -> None:
        self.members, self.spawn = members, spawn
        self.stopping = False
        self._signals: list[int] = []

    def _on_signal(self, sig: int, _frame: Any) -> None:
        self._signals.append(sig)

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        for m in self.members:
            m.start(self.spawn)
        while any(m.running or m.restart_at is not None for m in self.members):
            self._forward_signals()
            now = time.monotonic()
            for m in self.members:
                code = m.reap()
                if code is not None:
                    self._exited(m, code, now)
                elif m.restart_due(now) and not self.stopping:
                    m.restart(self.spawn)
            time.sleep(POLL_S)
        code = exit_code([m.code for m in self.members if m.code is not None])
        log.info("all members exited", extra={"code": code})
        return code

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop every member with `sig` and start none again."""
        self.stopping = True
        for m in self.members:
            m.restart_at = None
            m.signal(sig)

    def _forward_signals(self) -> None:
        while self._signals:
            sig = self._signals.pop(0)
            log.info("stopping the members", extra={"signal": signal.Signals(sig).name})
            self.stop(sig)

    def _exited(self, m: Member, code: int, now: float) -> None:
        where = {"member": m.plan.index, "worker_id": m.plan.worker_id, "code": code}
        if m.stopped_early():
            m.code = 0
            log.info("member stopped before it began processing", extra=where)
        elif code == 0 or self.stopping:
            log.info("member exited", extra=where)
        elif restartable(code):
            wait = m.schedule_restart(now)
            log.warning(f"member {m.plan.index} died ({_describe(code)}): restarting it in "
                        f"{wait:g}s", extra={**where, "restart_in_s": wait})
        else:
            log.error(f"member {m.plan.index} failed ({_describe(code)}): stopping the others",
                      extra=where)
            self.stop()


def follow_supervisor() -> bool:
    """In a member (SUPERVISOR_PID set): SIGTERM when the supervisor dies (Linux), so that no
    member outlives it. Returns whether this process is a member."""
    pid = os.environ.get(SUPERVISOR_PID)
    if not pid:
        return False
    with suppress(OSError, AttributeError):  # not Linux: members outlive a killed supervisor
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
    if str(os.getppid()) != pid:  # it died before the request above
        os.kill(os.getpid(), signal.SIGTERM)
    return True


class _MemberField(logging.Filter):
    def __init__(self, worker_id: str) -> None:
        super().__init__()
        self.worker_id = worker_id

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "worker_id"):
            record.worker_id = self.worker_id
        return True


def tag_member_logs(worker_id: str) -> None:
    """Every log line of a member carries its `worker_id`: the members share one stderr."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(_MemberField(worker_id))


def supervise(argv: Sequence[str], config: WorkerConfig, processes: int, topics: Sequence[str],
              port_free: Callable[[int], None]) -> int:
    """Run `processes` members of the topology reading `topics` with the supervisor's `argv`
    (`processor` arguments) and environment; their exit code. `port_free(port)` raises when a
    member's port is taken, before any member starts."""
    plans = plan_members(config, processes)
    for plan in plans:
        if plan.metrics_port:
            port_free(plan.metrics_port)
    idle = idle_members(processes, _partitions(config, topics))
    if idle:
        log.warning(f"{processes} processes for at most {processes - idle} partitions per topic: "
                    f"{idle} member(s) will idle until another leaves the group")
    members = [Member(p, member_argv(argv, p), member_env(os.environ, p)) for p in plans]
    log.info("supervising members", extra={"processes": processes,
                                           "ports": [p.metrics_port for p in plans]})
    return Supervisor(members).run()


def _partitions(config: WorkerConfig, topics: Sequence[str]) -> dict[str, int]:
    """The partition counts of the topics that exist; none when the broker cannot say (the
    members report that themselves)."""
    try:
        counts = partition_counts(AdminClient(admin_config(config)), timeout=10)
    except TopicError:
        return {}
    return {t: counts[t] for t in topics if t in counts}
