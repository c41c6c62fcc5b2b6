"""`processor run --processes 2`: two group members under one command on one host share the
input, answer state queries for each other on their own ports, and stop together on one SIGTERM
with their checkpoints committed."""

from __future__ import annotations

import os
import socket
import time
import urllib.parse

import pytest
from confluent_kafka import Consumer, TopicPartition

from processor.examples.revenue import revenue_oracle
from processor.tools import worker_process
from tests.integration.kafka import WorkerProcess
from tests.integration.scenario import RevenueScenario
from tests.integration.test_http import get, poll

pytestmark = pytest.mark.integration


def _free_port_pair() -> int:
    """A port P with P + 1 free too (members 0 and 1)."""
    for _ in range(50):
        with socket.socket() as a, socket.socket() as b:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            try:
                b.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise RuntimeError("no two consecutive free ports")


def _committed_everything(bootstrap: str, group: str, topic: str) -> bool:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                  "enable.auto.commit": False})
    try:
        parts = [TopicPartition(topic, p) for p in c.list_topics(topic, timeout=10)
                 .topics[topic].partitions]
        committed = {tp.partition: tp.offset for tp in c.committed(parts, timeout=10)}
        ends = {tp.partition: c.get_watermark_offsets(tp, timeout=10)[1] for tp in parts}
    finally:
        c.close()
    return committed == ends


def test_two_processes_share_the_input_and_stop_on_one_sigterm(broker, tmp_path, unique):
    sc = RevenueScenario(broker.bootstrap, tmp_path, unique)
    sc.produce(6_000, users=40)
    port = _free_port_pair()
    cmd = worker_process.worker_command(
        sc.topology, broker.bootstrap, tmp_path / "state", guarantee=sc.guarantee,
        commit_interval="100ms", worker_id=f"host-{unique}", metrics_port=port)
    env = {**os.environ, "PROCESSOR_MAX_POLL_INTERVAL_MS": "6000",
           "PROCESSOR_SESSION_TIMEOUT_MS": "6000",
           "PROCESSOR_ADVERTISED_URL": f"http://127.0.0.1:{port}"}
    env.pop("PROCESSOR_CRASH_AT", None)
    sup = worker_process.WorkerProcess([*cmd, "--processes", "2"], tmp_path / "supervisor.log",
                                       env)
    WorkerProcess.started.append(sup)  # type: ignore[arg-type]  # reaped (killed) after the test
    ports = [port, port + 1]
    members = [f"host-{unique}-0", f"host-{unique}-1"]

    # both members hold partitions, each on its own port
    for p in ports:
        poll(p, "/readyz", lambda a: a[0] == 200 and a[1]["tasks"] > 0, timeout=90)
    running = {r["worker_id"] for r in sup.find("task running")}
    assert running == set(members), running

    # the input is processed: every key's state through either port (proxied between members)
    oracle = revenue_oracle(sc.produced)

    def answers_everywhere() -> bool:
        for p in ports:
            for user in oracle:
                status, body = get(p, f"/state/totals/{urllib.parse.quote(user)}")
                if status != 200 or body["value"]["orders"] != oracle[user]["orders"]:
                    return False
        return True

    deadline = time.monotonic() + 60
    while not answers_everywhere():
        assert time.monotonic() < deadline, "state never matched the oracle through both ports"
        time.sleep(0.5)
    owners = {get(port, f"/state/totals/{urllib.parse.quote(u)}")[1]["worker"] for u in oracle}
    assert owners == set(members), owners

    # one SIGTERM stops both, each with its final checkpoint
    assert sup.terminate(timeout=90) == 0, sup.log_text()
    stopped = {r["worker_id"] for r in sup.find("worker stopped")}
    assert stopped == set(members), sup.log_text()
    assert [r["code"] for r in sup.find("member exited")] == [0, 0]
    assert sup.find("all members exited")[0]["code"] == 0
    assert {p.name for p in (tmp_path / "state").iterdir()} >= {"member-0", "member-1"}
    assert _committed_everything(broker.bootstrap, sc.name, sc.input)
    sc.assert_final_state_matches_oracle()
    if broker.isolates_aborted:
        sc.assert_no_repeated_outputs()
