"""Every CLI command answers a failure with one error line and a non-zero exit, never a traceback.

The commands run as users run them (`python -m processor ...` in a subprocess). An unreachable
broker is a closed local port; a port in use is a socket bound by the test.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.paths import REPO

TOPOLOGY = str(REPO / "topologies" / "clean_orders.yaml")
ORDERS_FILE = str(REPO / "tests" / "fixtures" / "batch" / "orders.jsonl")


@pytest.fixture(scope="module")
def closed_port() -> int:
    """A local port nothing listens on: connections are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        yield s.getsockname()[1]


def _cli(*args: str, stdin: str = "", env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    return _wait(_start(*args, env=env), stdin)


def _start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PROCESSOR_")}
    full_env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    return subprocess.Popen([sys.executable, "-m", "processor", *args], cwd=REPO, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**full_env, **(env or {})})


def _wait(proc: subprocess.Popen[str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    try:
        out, err = proc.communicate(stdin, timeout=90)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _one_error_line(run: subprocess.CompletedProcess[str], *needles: str, code: int = 2) -> str:
    assert run.returncode == code, (run.returncode, run.stderr[-2000:])
    assert "Traceback" not in run.stderr, run.stderr[-2000:]
    assert "%3|" not in run.stderr and "%4|" not in run.stderr, run.stderr[:2000]
    lines = run.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, run.stderr
    # librdkafka's own lines: at most the first of each kind, summarised (runtime/kafka/client_log.py)
    assert len(lines) <= 3, run.stderr
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


UNREACHABLE = [
    ("run", TOPOLOGY),
    ("dlq", "inspect", TOPOLOGY),
    ("dlq", "replay", TOPOLOGY),
    ("topics", "list"),
    ("topics", "describe", "orders"),
    ("topics", "create", "orders", "--partitions", "3"),
    ("consume", "orders", "--count", "1"),
    ("produce", "orders"),
    ("reset", TOPOLOGY, "--dry-run"),
    ("savepoint", "create", TOPOLOGY, "--to", "never-written"),
    ("savepoint", "create", TOPOLOGY, "--to", "never-written", "--stop-workers"),
    ("batch", TOPOLOGY),  # reads its topic as a range
    ("batch", TOPOLOGY, "--input", f"orders={ORDERS_FILE}"),  # writes its sink topic
]


@pytest.fixture(scope="module")
def unreachable_runs(closed_port: int) -> dict[tuple[str, ...], subprocess.CompletedProcess[str]]:
    """Every UNREACHABLE command, started together: each waits out librdkafka's ~10 s metadata
    timeout, so one after another they took over 100 s of the unit suite."""
    address = f"127.0.0.1:{closed_port}"
    procs = {args: _start(*args, "--bootstrap-servers", address) for args in UNREACHABLE}
    return {args: _wait(proc, '{"id": 1}\n') for args, proc in procs.items()}


@pytest.mark.parametrize("args", UNREACHABLE, ids=lambda a: " ".join(a[:2]))
def test_an_unreachable_broker_is_one_line(
        args: tuple[str, ...],
        unreachable_runs: dict[tuple[str, ...], subprocess.CompletedProcess[str]]) -> None:
    line = _one_error_line(unreachable_runs[args], "Broker transport failure")
    assert "bootstrap_servers" in line  # what to do: the setting to check


def test_a_metrics_port_in_use_is_one_line(busy_port: int, closed_port: int) -> None:
    run = _cli("run", TOPOLOGY, "--metrics-port", str(busy_port),
               "--bootstrap-servers", f"127.0.0.1:{closed_port}")
    _one_error_line(run, f"metrics_port {busy_port} is in use", "--metrics-port")


@pytest.mark.parametrize("kafka", ["tansu", "apache"])
def test_a_dev_broker_port_in_use_is_one_line(kafka: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        run = _cli("dev-broker", "--kafka", kafka, "--port", str(port))
    _one_error_line(run, f"port {port}", "already in use")


MISSING_FILE = [
    ("validate", "missing.yaml"),
    ("describe", "missing.yaml"),
    ("run", "missing.yaml"),
    ("dlq", "inspect", "missing.yaml"),
    ("dlq", "replay", "missing.yaml"),
    ("describe", TOPOLOGY, "--config", "missing.yaml"),
    ("run", TOPOLOGY, "--config", "missing.yaml"),
    ("topics", "list", "--config", "missing.yaml"),
    ("consume", "orders", "--config", "missing.yaml"),
    ("produce", "orders", "--file", "missing.jsonl", "--bootstrap-servers", "127.0.0.1:1"),
    ("reset", "missing.yaml"),
    ("savepoint", "create", "missing.yaml", "--to", "never-written"),
    ("savepoint", "restore", "missing.sp", TOPOLOGY),
    ("batch", "missing.yaml"),
    ("batch", TOPOLOGY, "--input", "orders=missing.jsonl"),
    ("batch", TOPOLOGY, "--input", f"orders={ORDERS_FILE}", "--config", "missing.yaml"),
    ("backfill", "missing.yaml"),
]


@pytest.mark.parametrize("args", MISSING_FILE, ids=lambda a: " ".join(a))
def test_a_missing_file_is_one_line(args: tuple[str, ...]) -> None:
    _one_error_line(_cli(*args), "missing.")


@pytest.mark.parametrize("args", [
    ("run", TOPOLOGY), ("describe", TOPOLOGY, "--show-config"), ("topics", "list"),
    ("consume", "orders"), ("produce", "orders"), ("dlq", "inspect", TOPOLOGY),
    ("reset", TOPOLOGY), ("batch", TOPOLOGY)])
def test_a_bad_setting_is_one_line(args: tuple[str, ...]) -> None:
    run = _cli(*args, env={"PROCESSOR_COMMIT_INTERVAL_MS": "soon"})
    _one_error_line(run, "commit_interval_ms", "not a duration")


def test_a_bad_topic_config_flag_is_one_line(closed_port: int) -> None:
    run = _cli("topics", "create", "t", "--topic-config", "no-equals-sign",
               "--bootstrap-servers", f"127.0.0.1:{closed_port}")
    _one_error_line(run, "--topic-config", "NAME=VALUE")


@pytest.mark.parametrize("rate", ["0", "-5", "nan", "inf"])
def test_a_produce_rate_that_is_no_rate_is_one_line(rate: str, closed_port: int) -> None:
    """--rate 0 once meant "no limit" silently; leaving --rate out is how to say that."""
    run = _cli("produce", "orders", "--rate", rate, "--bootstrap-servers",
               f"127.0.0.1:{closed_port}", stdin='{"a": 1}\n')
    _one_error_line(run, f"--rate {float(rate):g}: ", "greater than 0", "leave --rate out")
    assert "Broker" not in run.stderr  # refused before connecting


def test_the_demo_with_an_unreachable_broker_is_one_line(closed_port: int) -> None:
    run = _cli("demo", "--seconds", "1",
               env={"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{closed_port}"})
    _one_error_line(run, "Broker transport failure", "KAFKA_BOOTSTRAP_SERVERS")


def test_a_bad_reset_time_is_one_line() -> None:
    _one_error_line(_cli("reset", TOPOLOGY, "--to-datetime", "yesterday"),
                    "--to-datetime 'yesterday': expected an ISO 8601 time")
