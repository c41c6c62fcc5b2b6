"""`processor topics | produce | consume` against a real broker: a topic created from the CLI,
JSON lines in, the same records out (keys, timestamps, headers), a consume --json | produce
--envelope copy, read_committed hiding an aborted transaction, reading from the end, and the
worker naming the command that creates a missing source topic."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import orjson
from confluent_kafka import Producer

from tests.integration.kafka import ROOT, topology_file


def _cli(*args: str, stdin: str | None = None, timeout: float = 120
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "processor", *args], cwd=ROOT, text=True,
                          input=stdin, capture_output=True, timeout=timeout)


def _ok(run: subprocess.CompletedProcess[str]) -> str:
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    return run.stdout


def _consume_json(bootstrap: str, topic: str, count: int) -> list[dict]:
    out = _ok(_cli("consume", topic, "--from-beginning", "--count", str(count), "--timeout", "20s",
                   "--json", "--bootstrap-servers", bootstrap))
    return [orjson.loads(line) for line in out.splitlines()]


def test_topics_produce_consume_round_trip(broker, tmp_path: Path, unique: str) -> None:
    bs = broker.bootstrap
    topic, copy = f"orders-{unique}", f"orders-copy-{unique}"
    created = _ok(_cli("topics", "create", topic, "--partitions", "3", "--topic-config",
                       "retention.ms=86400000", "--bootstrap-servers", bs))
    assert created.startswith(f"created {topic}: 3 partitions")
    again = _cli("topics", "create", topic, "--bootstrap-servers", bs)
    assert again.returncode == 2 and "already exists" in again.stderr
    assert f"{topic}\t3" in _ok(_cli("topics", "list", "--bootstrap-servers", bs)).splitlines()
    described = _ok(_cli("topics", "describe", topic, "--bootstrap-servers", bs))
    assert "3 partitions" in described
    if broker.kind != "embedded-tansu":  # Tansu answers DescribeConfigs without topic configs
        assert "retention.ms=86400000" in described
    assert described.count("  partition ") == 3

    lines = [orjson.dumps({"user": f"u{i % 7}", "amount": i}).decode() for i in range(60)]
    source = tmp_path / "orders.jsonl"
    source.write_text("\n".join(lines) + "\n")
    run = _cli("produce", topic, "--file", str(source), "--key-field", "user",
               "--bootstrap-servers", bs)
    _ok(run)
    assert f"produced 60 records to {topic}" in run.stderr
    stamped = [orjson.dumps({"key": "u-env", "value": {"amount": 100 + i},
                             "timestamp": 1_700_000_000_000 + i, "headers": {"trace": f"t{i}"}}
                            ).decode() for i in range(5)]
    _ok(_cli("produce", topic, "--envelope", "--rate", "50", "--bootstrap-servers", bs,
             stdin="\n".join(stamped)))

    got = _consume_json(bs, topic, 65)
    assert sorted((r["key"], r["value"]["amount"]) for r in got) == sorted(
        [(f"u{i % 7}", i) for i in range(60)] + [("u-env", 100 + i) for i in range(5)])
    by_key: dict[str, set[int]] = {}
    for r in got:
        by_key.setdefault(r["key"], set()).add(r["partition"])
    assert all(len(parts) == 1 for parts in by_key.values())  # one key, one partition
    assert len({p for parts in by_key.values() for p in parts}) > 1  # spread over partitions
    env = sorted((r for r in got if r["key"] == "u-env"), key=lambda r: r["offset"])
    assert [(r["timestamp"], r["headers"]) for r in env] == [
        (1_700_000_000_000 + i, {"trace": f"t{i}"}) for i in range(5)]

    # consume --json is what produce --envelope reads: a copy keeps keys, values, times, headers
    _ok(_cli("topics", "create", copy, "--partitions", "3", "--bootstrap-servers", bs))
    _ok(_cli("produce", copy, "--envelope", "--bootstrap-servers", bs,
             stdin="\n".join(orjson.dumps(r).decode() for r in got)))
    copied = _consume_json(bs, copy, 65)

    def essence(records: list[dict]) -> list[tuple]:
        return sorted((r["partition"], r["key"], orjson.dumps(r["value"]), r["timestamp"],
                       tuple(sorted(r["headers"].items()))) for r in records)
    assert essence(copied) == essence(got)

    # pretty output: one header line and one value line per record
    pretty = _ok(_cli("consume", topic, "--from-beginning", "--count", "3", "--timeout", "20s",
                      "--bootstrap-servers", bs)).splitlines()
    assert len(pretty) == 6 and pretty[0].startswith(f"{topic}[") and "key='" in pretty[0]


def test_consume_is_read_committed_and_starts_at_the_end(broker, unique: str) -> None:
    broker.require_aborted_isolation("consume hiding an aborted transaction")
    bs = broker.bootstrap
    topic = f"txn-{unique}"
    _ok(_cli("topics", "create", topic, "--bootstrap-servers", bs))
    p = Producer({"bootstrap.servers": bs, "transactional.id": f"tools-test-{unique}"})
    p.init_transactions(30)
    p.begin_transaction()
    p.produce(topic, b'{"n": "aborted"}', b"a")
    p.abort_transaction(30)
    p.begin_transaction()
    p.produce(topic, b'{"n": "committed"}', b"c")
    p.commit_transaction(30)
    shown = _ok(_cli("consume", topic, "--from-beginning", "--json", "--timeout", "3s",
                     "--bootstrap-servers", bs))
    assert [orjson.loads(line)["value"] for line in shown.splitlines()] == [{"n": "committed"}]

    # without --from-beginning: only records written after it started
    reader = subprocess.Popen([sys.executable, "-m", "processor", "consume", topic, "--count",
                               "1", "--json", "--timeout", "60s", "--bootstrap-servers", bs],
                              cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        sent = 0
        while reader.poll() is None and sent < 200:
            _ok(_cli("produce", topic, "--bootstrap-servers", bs, stdin=f'{{"n": {sent}}}'))
            sent += 1
            time.sleep(0.2)
        out, err = reader.communicate(timeout=60)
    finally:
        reader.kill()
    assert reader.returncode == 0, err
    (record,) = [orjson.loads(line) for line in out.splitlines()]
    assert record["value"] != {"n": "committed"} and 0 <= record["value"]["n"] < sent


def test_the_worker_names_the_command_for_a_missing_source_topic(broker, tmp_path: Path,
                                                                 unique: str, monkeypatch) -> None:
    monkeypatch.setenv("PROCESSOR_SOURCE_TOPIC_WAIT_MS", "3000")  # the default waits 30 s
    missing = f"nowhere-{unique}"
    path = topology_file(tmp_path, "clean_orders.yaml", f"missing-{unique}",
                         {"topic: orders\n": f"topic: {missing}\n",
                          "name: clean-orders": f"name: missing-{unique}"})
    run = _cli("run", str(path), "--bootstrap-servers", broker.bootstrap, "--state-dir",
               str(tmp_path / "state"), "--log-format", "text", timeout=120)
    command = f"processor topics create {missing} --partitions 1 --bootstrap-servers " \
              f"{broker.bootstrap}"
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    assert f"waiting for source topic(s) {missing}: create them with {command}" in run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith(
        f"error: source topic(s) {missing} do not exist")
    assert run.stderr.strip().endswith(command)
