"""A savepoint of a chain of repartitions (key_by user, an aggregate, key_by country, a second
aggregate): the second repartition topic is fed by tasks that read the first, so its records'
upstream offsets are offsets of the first repartition topic, which a restore re-creates. After
the restore into a new application the downstream aggregate must neither drop the feeders' new
records as duplicates (marks left in the old offset space) nor count any twice — after a
clean stop, and after kill -9 with records in flight in both repartition topics."""

from __future__ import annotations

import time
from collections import Counter
from itertools import pairwise
from pathlib import Path

import orjson
import pytest

from processor.examples.revenue import sample_orders
from processor.tools.generator import create_topic, produce_json
from tests.integration.kafka import WorkerProcess, read_all
from tests.integration.test_savepoint import _cli, _ok, _refused

pytestmark = pytest.mark.integration

HALF = 3000
CHAIN = """\
name: {name}
sources:
  orders:
    topic: {input}
    key: {{format: string}}
    value: {{format: json}}
    timestamp: {{field: ts}}
sinks:
  by_country:
    topic: {output}
    key: {{format: string}}
    value: {{format: json}}
    partitions: 4
pipelines:
  - from: orders
    steps:
      - filter: "value['amount'] > 0 and value['status'] != 'cancelled'"
      - key_by: "value['user']"
      - aggregate:
          store: per_user
          emit: every_record
          orders: count()
          country: last(value['country'])
      - key_by: "value['country']"
      - aggregate:
          store: per_country
          updates: count()
      - to: by_country
"""


def _topology(tmp: Path, name: str, source: str, output: str) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(CHAIN.format(name=name, input=source, output=output))
    return path


def _oracle(orders: list[tuple[str, dict]]) -> dict[str, int]:
    """Each qualifying order makes the first aggregate (emit: every_record) emit one update
    carrying the order's country: the second counts them per country."""
    return dict(Counter(o["country"] for _, o in orders
                        if o["amount"] > 0 and o["status"] != "cancelled"))


def _create_when_stopped(topology: Path, bootstrap: str, to: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        run = _cli("savepoint", "create", str(topology), "--to", str(to),
                   "--bootstrap-servers", bootstrap)
        if run.returncode == 0 or time.monotonic() > deadline:
            _ok(run)
            return
        _refused(run, "active worker")
        time.sleep(2)


@pytest.mark.parametrize("stop", ["clean", "kill"])
def test_chained_repartitions_restore_without_loss_or_duplicates(broker, tmp_path: Path,
                                                                 unique: str, stop: str) -> None:
    broker.require_aborted_isolation("outputs without duplicates across the cut")
    source, output = f"orders-{unique}", f"by-country-{unique}"
    create_topic(broker.bootstrap, source, 4)
    a = _topology(tmp_path, f"chain-{unique}", source, output)
    b = _topology(tmp_path, f"chain-{unique}-b", source, output)
    first, second = ([(f"{k}-{seed}", v) for k, v in sample_orders(HALF, users=300, seed=seed)]
                     for seed in (1, 2))
    # A processes the first half; under `kill` in two runs: the first to the end (the downstream
    # aggregate has marks), the second killed mid-input, records left in flight downstream
    parts = [first] if stop == "clean" else [first[:HALF // 2], first[HALF // 2:]]
    for i, part in enumerate(parts):
        produce_json(broker.bootstrap, source, part)
        env = {"PROCESSOR_BATCH_SIZE": "100"}
        killed = stop == "kill" and i == 1
        if killed:
            env["PROCESSOR_CRASH_AT"] = "batch.processed:12"
        worker_a = WorkerProcess(a, broker.bootstrap, tmp_path / "state-a", tmp_path,
                                 idle="6s", commit_interval="20ms", env=env)
        assert worker_a.wait(240) == (-9 if killed else 0), worker_a.log_text()[-4000:]

    savepoint = tmp_path / "sp"
    _create_when_stopped(a, broker.bootstrap, savepoint)
    manifest = orjson.loads((savepoint / "manifest.json").read_bytes())
    marks = [r.get("upstream") for r in
             manifest["stores"]["per_country"]["position_records"].values()]
    assert any(marks), "the downstream aggregate had absorbed records: it holds marks"
    if stop == "kill":
        assert sum(sum(t["records"].values()) for t in manifest["inflight"].values()) > 0

    _ok(_cli("savepoint", "restore", str(savepoint), str(b), "--bootstrap-servers",
             broker.bootstrap))
    produce_json(broker.bootstrap, source, second)
    worker_b = WorkerProcess(b, broker.bootstrap, tmp_path / "state-b", tmp_path, idle="6s")
    assert worker_b.wait(240) == 0, worker_b.log_text()[-4000:]

    seen: dict[str, list[int]] = {}
    for key, value, _ in read_all(broker.bootstrap, output):
        assert key is not None and value is not None
        seen.setdefault(key.decode(), []).append(orjson.loads(value)["updates"])
    repeats = {k: v for k, v in seen.items() if any(y <= x for x, y in pairwise(v))}
    assert not repeats, f"updates repeated or stepped back: {list(repeats.items())[:3]}"
    final = {k: v[-1] for k, v in seen.items()}
    assert final == _oracle(first + second)
