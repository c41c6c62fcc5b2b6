"""`processor run --processes N` without a broker (runtime/supervisor.py): what makes each
member a group member of its own (worker id, state dir, port, advertised URL, its command line
as the CLI parses it), the exit-code and restart rules, and the supervision itself on real
child processes: a signal reaches every member, a crashed member is restarted, a failed one
stops the others, a member dies with a killed supervisor, and the CLI's failures are one line."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from processor.cli import build_parser
from processor.errors import ProcessorError
from processor.runtime import supervisor
from processor.runtime.config import load_config
from processor.runtime.supervisor import (
    SUPERVISOR_PID,
    Member,
    MemberPlan,
    Supervisor,
    exit_code,
    idle_members,
    member_argv,
    member_env,
    plan_members,
    restartable,
    supervise,
    tag_member_logs,
)
from tests.paths import REPO

TOPOLOGY = str(REPO / "topologies" / "clean_orders.yaml")


def test_each_member_gets_its_own_id_state_dir_port_and_url(tmp_path: Path) -> None:
    config = load_config(state_dir=tmp_path, worker_id="pod-3", metrics_port=9100,
                         advertised_url="http://pod-3.workers.streams.svc:9100/")
    plans = plan_members(config, 3)
    assert [p.worker_id for p in plans] == ["pod-3-0", "pod-3-1", "pod-3-2"]
    assert [p.state_dir for p in plans] == [tmp_path / f"member-{i}" for i in range(3)]
    assert [p.metrics_port for p in plans] == [9100, 9101, 9102]
    assert [p.advertised_url for p in plans] == [
        f"http://pod-3.workers.streams.svc:{port}/" for port in (9100, 9101, 9102)]
    # a URL without a port gets the member's; an IPv6 host keeps its brackets
    config = load_config(state_dir=tmp_path, metrics_port=8000, advertised_url="http://[::1]")
    assert [p.advertised_url for p in plan_members(config, 2)] == ["http://[::1]:8000",
                                                                   "http://[::1]:8001"]


def test_members_without_a_fixed_port(tmp_path: Path) -> None:
    unset = plan_members(load_config(state_dir=tmp_path), 2)
    assert [p.metrics_port for p in unset] == [None, None]
    base = load_config(state_dir=tmp_path).resolved_worker_id()  # host name + state dir hash
    assert [p.worker_id for p in unset] == [f"{base}-0", f"{base}-1"]
    free = plan_members(load_config(state_dir=tmp_path, metrics_port=0), 2)
    assert [p.metrics_port for p in free] == [0, 0]  # each binds a free port of its own


@pytest.mark.parametrize(("settings", "processes", "message"), [
    ({}, 0, "--processes must be at least 1, not 0"),
    ({"advertised_url": "http://h:9100"}, 2, "needs a fixed metrics_port"),
    ({"advertised_url": "http://h:9100", "metrics_port": 0}, 2, "needs a fixed metrics_port"),
    ({"metrics_port": 65535}, 2, "above 65535"),
    ({"advertised_url": "http://h:port", "metrics_port": 9100}, 2, "invalid port"),
])
def test_plans_that_cannot_work(tmp_path: Path, settings: dict, processes: int,
                                message: str) -> None:
    with pytest.raises(ProcessorError, match=message):
        plan_members(load_config(state_dir=tmp_path, **settings), processes)


def test_a_member_reruns_the_command_with_its_own_flags_winning(tmp_path: Path) -> None:
    argv = ["run", TOPOLOGY, "--processes", "2", "--worker-id", "w", "--state-dir", "s",
            "--metrics-port", "9100", "--stop-when-idle", "5s", "--start", "orders=earliest"]
    plan = MemberPlan(1, "w-1", Path("s/member-1"), 9101, None)
    cmd = member_argv(argv, plan)
    assert cmd[:3] == [sys.executable, "-m", "processor"]
    args = build_parser().parse_args(cmd[3:])
    assert (args.processes, args.worker_id, args.state_dir, args.metrics_port) == (
        1, "w-1", "s/member-1", 9101)
    assert (args.topology, args.stop_when_idle, args.start) == (TOPOLOGY, "5s",
                                                                ["orders=earliest"])
    # after `--` everything is positional: the member's flags go before it
    args = build_parser().parse_args(member_argv(["run", "--processes", "2", "--", TOPOLOGY],
                                                 plan)[3:])
    assert (args.topology, args.processes, args.worker_id) == (TOPOLOGY, 1, "w-1")


def test_member_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with_url = MemberPlan(1, "w-1", Path("s"), 9101, "http://h:9101")
    env = member_env({"PROCESSOR_ADVERTISED_URL": "http://h:9100", "X": "1"}, with_url)
    assert env == {"PROCESSOR_ADVERTISED_URL": "http://h:9101", "X": "1",
                   SUPERVISOR_PID: str(os.getpid())}
    assert "PROCESSOR_ADVERTISED_URL" not in member_env({}, MemberPlan(0, "w", Path("s"), 0, None))


def test_exit_code_and_restart_rules() -> None:
    assert exit_code([]) == 0
    assert exit_code([0, 0]) == 0
    assert exit_code([0, 3]) == 3
    assert exit_code([2, -signal.SIGKILL]) == 137  # killed by signal S counts 128 + S
    assert exit_code([0, -signal.SIGTERM, 3]) == 143
    assert restartable(-signal.SIGKILL) and restartable(1)
    assert not any(restartable(c) for c in (0, 2, 3))
    assert idle_members(2, {"orders": 4}) == 0
    assert idle_members(6, {"orders": 4, "orders-repartition": 4, "users": 1}) == 2
    assert idle_members(3, {}) == 0  # partitions unknown: no warning


def test_member_log_lines_carry_the_worker_id() -> None:
    root = logging.getLogger()
    handler = logging.Handler()
    records: list[logging.LogRecord] = []
    handler.emit = records.append  # type: ignore[method-assign]
    saved = root.handlers[:]
    root.handlers[:] = [handler]
    try:
        tag_member_logs("w-1")
        logging.getLogger("processor.test").warning("plain")
        logging.getLogger("processor.test").warning("own", extra={"worker_id": "other"})
    finally:
        root.handlers[:] = saved
    assert [r.worker_id for r in records] == ["w-1", "other"]  # type: ignore[attr-defined]


# -- supervision of real child processes --------------------------------------------------------

CHILD = """
import os, signal, sys, time
from pathlib import Path
out, behaviour = Path(sys.argv[1]), sys.argv[2]
runs = len(list(out.parent.glob(out.name + ".run*")))
Path(f"{out}.run{runs}").write_text(str(os.getpid()))
def stop(sig, _):
    Path(f"{out}.got").write_text(signal.Signals(sig).name)
    sys.exit(0)
if behaviour != "unready":  # a worker handles the stop signals once it begins processing
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
if behaviour == "crash-once" and runs == 0:
    os.kill(os.getpid(), signal.SIGKILL)
if behaviour.startswith("exit-"):
    time.sleep(0.5)
    sys.exit(int(behaviour[5:]))
Path(f"{out}.ready").touch()
time.sleep(60)
sys.exit(9)  # never stopped
"""


@pytest.fixture
def restore_signals() -> Iterator[None]:
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def _members(tmp_path: Path, *behaviours: str) -> list[Member]:
    return [Member(MemberPlan(i, f"w-{i}", tmp_path, None, None),
                   [sys.executable, "-c", CHILD, str(tmp_path / f"m{i}"), b],
                   member_env(os.environ, MemberPlan(i, f"w-{i}", tmp_path, None, None)))
            for i, b in enumerate(behaviours)]


def _signal_when_ready(paths: list[Path], sig: int) -> threading.Thread:
    def send() -> None:
        deadline = time.monotonic() + 30
        while not all(p.exists() for p in paths) and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), sig)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_reaches_every_member_and_all_exit_zero(tmp_path: Path, restore_signals: None,
                                                         sig: signal.Signals) -> None:
    members = _members(tmp_path, "wait", "wait")
    _signal_when_ready([tmp_path / "m0.ready", tmp_path / "m1.ready"], sig)
    assert Supervisor(members).run() == 0
    assert [(tmp_path / f"m{i}.got").read_text() for i in (0, 1)] == [sig.name, sig.name]
    assert [m.code for m in members] == [0, 0]


def test_a_member_stopped_before_it_began_processing_counts_as_stopped(
        tmp_path: Path, restore_signals: None, caplog: pytest.LogCaptureFixture) -> None:
    members = _members(tmp_path, "wait", "unready")
    _signal_when_ready([tmp_path / "m0.ready", tmp_path / "m1.ready"], signal.SIGTERM)
    with caplog.at_level(logging.INFO, "processor.supervisor"):
        assert Supervisor(members).run() == 0
    assert [m.code for m in members] == [0, 0]
    assert "member stopped before it began processing" in [r.msg for r in caplog.records]


def test_a_crashed_member_is_restarted(tmp_path: Path, restore_signals: None,
                                       monkeypatch: pytest.MonkeyPatch,
                                       caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(supervisor, "BACKOFF_S", (0.2, 0.4))
    members = _members(tmp_path, "wait", "crash-once")
    _signal_when_ready([tmp_path / "m0.ready", tmp_path / "m1.ready"], signal.SIGTERM)
    with caplog.at_level(logging.INFO, "processor.supervisor"):
        assert Supervisor(members).run() == 0
    assert len(list(tmp_path.glob("m1.run*"))) == 2  # killed once, then ran until the SIGTERM
    assert len(list(tmp_path.glob("m0.run*"))) == 1
    died = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert died == ["member 1 died (killed by SIGKILL): restarting it in 0.2s"]


def test_a_failed_member_stops_the_others(tmp_path: Path, restore_signals: None,
                                          caplog: pytest.LogCaptureFixture) -> None:
    members = _members(tmp_path, "wait", "exit-3")
    with caplog.at_level(logging.INFO, "processor.supervisor"):
        assert Supervisor(members).run() == 3
    assert (tmp_path / "m0.got").read_text() == "SIGTERM"
    assert len(list(tmp_path.glob("m1.run*"))) == 1  # not restarted: it would fail again
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [
        "member 1 failed (exit 3): stopping the others"]


def test_members_that_finish_leave_the_others_running(tmp_path: Path,
                                                      restore_signals: None) -> None:
    members = _members(tmp_path, "exit-0", "exit-0")
    assert Supervisor(members).run() == 0
    assert not list(tmp_path.glob("*.got"))


def test_ports_are_checked_before_any_member_starts(tmp_path: Path) -> None:
    checked: list[int] = []

    def port_free(port: int) -> None:
        checked.append(port)
        if port == 9101:
            raise ProcessorError("metrics_port 9101 is in use")

    config = load_config(state_dir=tmp_path, metrics_port=9100)
    with pytest.raises(ProcessorError, match="9101 is in use"):
        supervise(["run", TOPOLOGY], config, 3, ["orders"], port_free)
    assert checked == [9100, 9101]
    assert not (tmp_path / "member-0").exists()


PARENT = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]],
                         env={**os.environ, "PROCESSOR_SUPERVISOR_PID": str(os.getpid())})
print(child.pid, flush=True)
time.sleep(60)
"""
FOLLOWER = """
import signal, sys, time
from pathlib import Path
from processor.runtime.supervisor import follow_supervisor
out = Path(sys.argv[1])
signal.signal(signal.SIGTERM, lambda *_: (out.write_text("SIGTERM"), sys.exit(0)))
assert follow_supervisor()
Path(f"{out}.ready").touch()
time.sleep(60)
"""


def test_a_member_stops_when_its_supervisor_is_killed(tmp_path: Path) -> None:
    out = tmp_path / "follower"
    parent = subprocess.Popen([sys.executable, "-c", PARENT, FOLLOWER, str(out)], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    try:
        deadline = time.monotonic() + 30
        while not Path(f"{out}.ready").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        parent.kill()
        parent.wait(10)
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert out.read_text() == "SIGTERM"
    finally:
        parent.kill()
        if not out.exists():
            os.kill(child, signal.SIGKILL)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PROCESSOR_") and k != "KAFKA_BOOTSTRAP_SERVERS"}
    return subprocess.run([sys.executable, "-m", "processor", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("flag", "message"), [
    ("0", "error: --processes must be at least 1, not 0"),
    ("-1", "error: --processes must be at least 1, not -1"),
])
def test_a_bad_process_count_is_one_line(tmp_path: Path, flag: str, message: str) -> None:
    run = _cli("run", TOPOLOGY, "--processes", flag, "--state-dir", str(tmp_path),
               "--bootstrap-servers", "127.0.0.1:1")
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.strip().splitlines() == [message]


def test_members_failing_to_reach_the_broker_stop_the_run(tmp_path: Path) -> None:
    """Each member answers as a lone worker would (one error line, exit 2); the supervisor
    stops the others and exits 2, with no traceback anywhere."""
    run = _cli("run", TOPOLOGY, "--processes", "2", "--state-dir", str(tmp_path),
               "--bootstrap-servers", "127.0.0.1:1", "--log-format", "json")
    assert run.returncode == 2, run.stderr[-3000:]
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    errors = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert errors and all("Broker transport failure" in line for line in errors), run.stderr
    assert '"msg": "member started"' in run.stderr and '"msg": "all members exited"' in run.stderr


def test_a_member_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        run = _cli("run", TOPOLOGY, "--processes", "2", "--metrics-port", str(port - 1),
                   "--state-dir", str(tmp_path), "--bootstrap-servers", "127.0.0.1:1")
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "is in use" in errors[0], run.stderr
    assert "member started" not in run.stderr
