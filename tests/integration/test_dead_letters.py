"""Bad records on a running topology: each kind lands in the dead-letter topic exactly once,
with its original bytes and headers saying why and where; every good record reaches the
outputs; `processor dlq replay` after a fix delivers them. Real broker, real worker processes.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from processor.tools.generator import create_topic
from tests.integration.kafka import ROOT, WorkerProcess, read_all

pytestmark = pytest.mark.integration

FIXTURES = ROOT / "tests" / "fixtures" / "poison"
BIG = 600_000  # bytes of note: the record fits, the doubled one (1.2 MB) does not (1 MB limit)


def _copy_topology(tmp: Path, unique: str) -> dict[str, Any]:
    names = {"name": f"poison-{unique}", "orders": f"orders-{unique}",
             "orders-out": f"orders-out-{unique}", "tags-out": f"tags-out-{unique}",
             "totals-out": f"totals-out-{unique}"}
    paths = {}
    for version in ("v1", "v2"):
        text = (FIXTURES / f"poison_{version}.yaml").read_text()
        text = text.replace("name: poison", f"name: {names['name']}")
        for t in ("orders-out", "tags-out", "totals-out"):
            text = text.replace(f"topic: {t},", f"topic: {names[t]},")
        text = text.replace("topic: orders\n", f"topic: {names['orders']}\n")
        paths[version] = tmp / f"poison_{version}.yaml"
        paths[version].write_text(text)
    shutil.copyfile(FIXTURES / "poison_fns.py", tmp / "poison_fns.py")
    return {**names, **paths}


def _records() -> tuple[list[tuple[bytes, bytes]], dict[str, list[int]]]:
    """Good orders with five kinds of poison among them; returns (records, kind -> indexes)."""
    out: list[tuple[bytes, bytes]] = []
    kinds: dict[str, list[int]] = {k: [] for k in
                                   ("bad_json", "no_amount", "explode", "huge", "int_tag", "str_qty",
                                    "double")}
    for i in range(1500):
        user = f"u{i % 20}"
        v: dict[str, Any] = {"id": i, "user": user, "amount": i % 50, "qty": 1 + i % 3,
                             "tag": f"t{i % 7}", "note": "n"}
        kind = None
        if i % 100 == 7:
            kind = "bad_json"
        elif i % 100 == 23:
            kind, v = "no_amount", {k: x for k, x in v.items() if k != "amount"}
        elif i % 100 == 41:
            kind, v["explode"] = "explode", True
        elif i % 250 == 59:
            kind, v["note"] = "huge", "x" * BIG
        elif i % 100 == 77:
            kind, v["tag"] = "int_tag", 5
        elif i % 100 == 91:
            kind, v["qty"] = "str_qty", str(v["qty"])
        elif i % 250 == 113:  # fails in two pipelines: one dead letter for each
            kind, v["explode"], v["tag"] = "double", True, 9
        value = b'{"id": ' + str(i).encode() + b', "broken' if kind == "bad_json" else orjson.dumps(v)
        if kind:
            kinds[kind].append(i)
        out.append((user.encode(), value))
    return out, kinds


def _produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True})
    for i, (k, v) in enumerate(records):
        p.produce(topic, v, k, partition=i % 4, headers=[("origin", b"test")])
        p.poll(0)
    assert p.flush(30) == 0


def _dlq(bootstrap: str, topic: str) -> list[Any]:
    """Every dead letter (the messages, headers included), in partition then offset order."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"dlq-reader-{topic}",
                  "enable.auto.commit": False, "isolation.level": "read_committed",
                  "enable.partition.eof": True})
    parts = list(c.list_topics(topic, timeout=10).topics[topic].partitions)
    c.assign([TopicPartition(topic, p, 0) for p in parts])
    out, eof = [], set()
    while len(eof) < len(parts):
        for m in c.consume(1000, 1.0):
            if m.error() is not None:
                eof.add(m.partition())
                continue
            eof.discard(m.partition())
            out.append(m)
    c.close()
    return sorted(out, key=lambda m: (m.partition(), m.offset()))


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "processor", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=180)


def test_poison_pills_go_to_the_dlq_and_replay_after_a_fix(broker, tmp_path, unique):
    t = _copy_topology(tmp_path, unique)
    bootstrap = broker.bootstrap
    create_topic(bootstrap, t["orders"], 4)
    records, kinds = _records()
    _produce(bootstrap, t["orders"], records)
    values = [orjson.loads(v) if i not in kinds["bad_json"] else None
              for i, (_, v) in enumerate(records)]

    w = WorkerProcess(t["v1"], bootstrap, tmp_path / "state", tmp_path)
    assert w.wait() == 0, w.log_text()

    # -- the dead letters: exactly the bad records, once each, bytes untouched ------------
    letters = _dlq(bootstrap, f"{t['name']}-dlq")
    by_id: dict[tuple[int, str], Any] = {}
    for m in letters:
        h = {k: v.decode() for k, v in m.headers()}
        value = m.value()
        if h["processor.source.topic"].endswith("-repartition"):
            inner = orjson.loads(value)  # the repartition envelope, as read
            assert h["processor.upstream.partition"] == str(inner[0])
            assert h["processor.upstream.offset"] == str(inner[1])
            i = inner[-1]["id"]
        else:
            assert h["processor.source.topic"] == t["orders"]
            i = next(j for j, (_, v) in enumerate(records) if v == value)
            assert m.key() == records[i][0]
            assert ("origin", b"test") in m.headers(), "the original headers are kept"
            assert h["processor.source.partition"] == str(i % 4)
        assert (i, h["processor.error.step"]) not in by_id, f"record {i} dead-lettered twice"
        by_id[i, h["processor.error.step"]] = h
        assert h["processor.payload"] == "source"
        assert h["processor.topology"] == t["name"]
        assert int(h["processor.error.time"]) > 0 and h["processor.source.offset"].isdigit()
    bad = {i for ids in kinds.values() for i in ids}
    assert {i for i, _ in by_id} == bad, f"dead-lettered: {sorted(by_id)[:10]}"
    assert len(by_id) == len(bad) + len(kinds["double"])
    expect = {"bad_json": ("source", "DeserializationError"),
              "no_amount": ("pipelines[0].steps[0]", "KeyError"),
              "explode": ("pipelines[0].steps[1]", "ValueError"),
              "huge": ("pipelines[0].steps[3] to", "KafkaException"),
              "int_tag": ("pipelines[1].steps[1] to", "TypeError"),
              "str_qty": ("pipelines[2].steps[1]", "TypeError")}
    for kind, ids in kinds.items():
        assert ids, kind
        for i in ids:
            for step, cls in ([expect["explode"], expect["int_tag"]] if kind == "double"
                              else [expect[kind]]):
                assert by_id[i, step]["processor.error.class"] == cls, (kind, i, step)
    assert "explode flag set" in by_id[kinds["explode"][0], expect["explode"][0]][
        "processor.error.message"]
    assert "MSG_SIZE_TOO_LARGE" in by_id[kinds["huge"][0], expect["huge"][0]]["processor.error.message"]

    # -- every good record reached every output it should -----------------------------------
    def ids(topic: str) -> Counter[int]:
        return Counter(orjson.loads(v)["id"] for _, v, _ in read_all(bootstrap, topic))

    decodable = [i for i in range(len(records)) if values[i] is not None]
    fails_p0 = set(kinds["no_amount"] + kinds["explode"] + kinds["huge"] + kinds["double"])
    fails_p1 = set(kinds["int_tag"] + kinds["double"])
    assert ids(t["orders-out"]) == Counter(i for i in decodable if i not in fails_p0)
    assert ids(t["tags-out"]) == Counter(i for i in decodable if i not in fails_p1)
    totals = {k.decode(): orjson.loads(v) for k, v, _ in read_all(bootstrap, t["totals-out"])}

    def oracle(skip: set[int]) -> dict[str, dict[str, int]]:
        want: dict[str, dict[str, int]] = {}
        for i in decodable:
            if i in skip:
                continue
            acc = want.setdefault(values[i]["user"], {"orders": 0, "qty": 0})
            acc["orders"] += 1
            acc["qty"] += int(values[i]["qty"])
        return want

    assert totals == oracle(set(kinds["str_qty"]))
    assert sum(1 for r in w.logs() if r.get("msg") == "record failed") >= 1

    # -- inspect shows them readably ---------------------------------------------------------
    shown = _cli("dlq", "inspect", str(t["v1"]), "--bootstrap-servers", bootstrap,
                 "--error-class", "ValueError")
    assert shown.returncode == 0, shown.stderr
    explode_letters = len(kinds["explode"]) + len(kinds["double"])
    assert f"{explode_letters} dead letters in {t['name']}-dlq" in shown.stdout
    assert "explode flag set" in shown.stdout and "step pipelines[0].steps[1]" in shown.stdout

    # -- fix, then replay: a dry run counts, the real one re-injects -----------------------
    dry = _cli("dlq", "replay", str(t["v2"]), "--bootstrap-servers", bootstrap, "--dry-run",
               "--error-class", "KeyError")
    assert dry.returncode == 0, dry.stderr
    assert f"would replay: {len(kinds['no_amount'])} to {t['orders']}" in dry.stdout
    done = _cli("dlq", "replay", str(t["v2"]), "--bootstrap-servers", bootstrap)
    assert done.returncode == 0, done.stderr
    repartition = f"{t['name']}-totals-repartition"
    per_topic = sorted([(t["orders"], len(by_id) - len(kinds["str_qty"])),
                        (repartition, len(kinds["str_qty"]))])
    assert "replayed: " + ", ".join(f"{n} to {topic}" for topic, n in per_topic) in done.stdout, \
        done.stdout
    w2 = WorkerProcess(t["v2"], bootstrap, tmp_path / "state", tmp_path)
    assert w2.wait() == 0, w2.log_text()

    # everything fixable arrived exactly once more; corrupt JSON is dead-lettered again
    assert ids(t["orders-out"]) == Counter(i for i in decodable)
    assert ids(t["tags-out"]) == Counter(i for i in decodable)
    totals = {k.decode(): orjson.loads(v) for k, v, _ in read_all(bootstrap, t["totals-out"])}
    assert totals == oracle(set())
    again = _dlq(bootstrap, f"{t['name']}-dlq")[len(letters):]
    assert sorted(m.value() for m in again) == sorted(records[i][1] for i in kinds["bad_json"])
    for m in again:
        h = dict(m.headers())
        assert h["processor.replayed.from"].startswith(f"{t['name']}-dlq[".encode())
        assert h["processor.error.class"] == b"DeserializationError"

    # progress is kept: the next replay examines only the letters written since
    nxt = _cli("dlq", "replay", str(t["v2"]), "--bootstrap-servers", bootstrap, "--dry-run")
    assert f"examined {len(kinds['bad_json'])}," in nxt.stdout, nxt.stdout


def _run_v1_with_policy(broker: Any, tmp: Path, unique: str, policy: str,
                        count: int | None = None) -> tuple[dict[str, Any], dict[str, list[int]],
                                                           WorkerProcess]:
    """The v1 topology with another top-level on_error, over the first `count` records."""
    t = _copy_topology(tmp, unique)
    t["v1"].write_text(t["v1"].read_text().replace("on_error: dlq", f"on_error: {policy}"))
    create_topic(broker.bootstrap, t["orders"], 4)
    records, kinds = _records()
    _produce(broker.bootstrap, t["orders"], records[:count])
    return t, kinds, WorkerProcess(t["v1"], broker.bootstrap, tmp / "state", tmp)


def test_fail_policy_stops_the_worker_with_the_record_coordinates(broker, tmp_path, unique):
    t, _, w = _run_v1_with_policy(broker, tmp_path, unique, "fail", 8)  # one poison: bad JSON at 7
    assert w.wait() == 3, w.log_text()
    stop = next(r for r in w.logs() if r.get("msg") == "stopping: a record could not be processed")
    assert (stop["topic"], stop["partition"], stop["step"]) == (t["orders"], 7 % 4, "source")
    assert stop["offset"] == 1  # the second record of partition 3
    assert "cannot decode record" in stop["error"]


def test_skip_policy_drops_and_counts(broker, tmp_path, unique):
    t, kinds, w = _run_v1_with_policy(broker, tmp_path, unique, "skip")
    assert w.wait() == 0, w.log_text()
    md = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "md"}).list_topics(timeout=10)
    assert f"{t['name']}-dlq" not in md.topics, "no dead-letter topic when nothing uses it"
    fails_p0 = set(kinds["no_amount"] + kinds["explode"] + kinds["huge"] + kinds["bad_json"]
                   + kinds["double"])
    got = Counter(orjson.loads(v)["id"] for _, v, _ in read_all(broker.bootstrap, t["orders-out"]))
    assert got == Counter(i for i in range(len(_records()[0])) if i not in fails_p0)
    failed = [r for r in w.logs() if r.get("msg") == "record failed"]
    assert failed and all(r["policy"] == "skip" for r in failed)
