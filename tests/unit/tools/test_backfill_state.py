"""`processor backfill` without a broker: the switch rule, the sources it accepts, its identity,
and the savepoint written from a real batch run over a history file (real RocksDB stores):
source readers resume at the switch offsets, repartition readers at 0 with no upstream marks,
event-time state as the history left it, and the savepoint is one a restore accepts."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from processor.cli import main
from processor.errors import ProcessorError
from processor.graph import build_topology
from processor.runtime.batch.engine import BatchRun
from processor.runtime.config import load_config
from processor.runtime.kafka.ranges import PartitionOffsets, check_partitions, compute_ranges
from processor.spec import load_spec
from processor.spec.bounded import Bound, BoundedSpec, FileSinkSpec
from processor.state.partitioner import partition_for
from processor.tools.backfill import history_spec
from processor.tools.backfill_savepoint import write_batch_savepoint
from processor.tools.backfill_switch import (
    backfill_identity,
    backfill_sources,
)
from processor.tools.savepoint import summary
from processor.tools.savepoint_format import read_lines, store_path
from processor.tools.savepoint_migrate import plan_migration

T0 = 1_700_000_000_000
SWITCH = T0 + 5_500  # inside the window [T0 + 5000, T0 + 6000)
PARTITIONS = 3

TOPOLOGY = """
name: bf
sources:
  orders:
    topic: orders
    timestamp: {field: ts, unit: ms}
    watermark: {max_out_of_orderness: 2s}
    backfill:
      file: {path: history.jsonl, key: id}
      switch: {timestamp: %d}
sinks:
  totals: {topic: totals}
  gmv: {topic: gmv}
pipelines:
  - from: orders
    steps:
      - aggregate: {store: per_order, n: count()}
      - to: totals
  - from: orders
    steps:
      - key_by: "value['country']"
      - window: {tumbling: 1s, late: drop}
      - aggregate: {store: gmv, orders: count()}
      - to: gmv
"""


def _orders() -> list[dict]:
    """Ten orders a second for eight seconds, over three countries."""
    return [{"id": f"o{i}", "country": "abc"[i % 3], "ts": T0 + i * 100} for i in range(80)]


@pytest.fixture
def topology_path(tmp_path: Path) -> Path:
    path = tmp_path / "bf.yaml"
    path.write_text(TOPOLOGY % SWITCH)
    (tmp_path / "history.jsonl").write_bytes(b"".join(orjson.dumps(o) + b"\n" for o in _orders()))
    return path


def _switch(bound: Bound, found: dict[int, int], ends: dict[int, int]) -> dict[int, int]:
    """The switch offsets as switch_offsets resolves them, from the broker's answers: the end
    of the history's range (`found`: Kafka's offsets-for-times answers, -1 for none)."""
    at_time = {bound.timestamp: found} if bound.timestamp is not None else {}
    ranges = compute_ranges(BoundedSpec(end=bound),
                            PartitionOffsets(dict.fromkeys(ends, 0), ends), at_time)
    return {p: r.end for p, r in ranges.items()}


def test_switch_is_the_first_offset_at_or_after_the_time_else_the_end() -> None:
    at = Bound(timestamp=SWITCH)
    assert _switch(at, {0: 7, 1: -1, 2: 0}, {0: 9, 1: 4, 2: 3}) == {0: 7, 1: 4, 2: 0}
    assert _switch(at, {0: -1}, {0: 5}) == {0: 5}


def test_sources_a_backfill_runs(tmp_path: Path, topology_path: Path) -> None:
    assert list(backfill_sources(load_spec(topology_path))) == ["orders"]
    plain = tmp_path / "plain.yaml"
    plain.write_text(TOPOLOGY.split("    backfill:")[0] + TOPOLOGY.split("switch: {timestamp: %d}")[1])
    with pytest.raises(ProcessorError, match="no source has `backfill:`"):
        backfill_sources(load_spec(plain))
    in_topic = tmp_path / "in_topic.yaml"
    in_topic.write_text((TOPOLOGY % SWITCH).replace(
        f"file: {{path: history.jsonl, key: id}}\n      switch: {{timestamp: {SWITCH}}}",
        "switch: {offsets: {0: 10}}"))
    assert list(backfill_sources(load_spec(in_topic))) == ["orders"]  # its own topic


def test_switch_offsets_given_per_partition_default_to_the_end() -> None:
    assert _switch(Bound(offsets={0: 10}), {}, {0: 50, 1: 40}) == {0: 10, 1: 40}
    assert _switch(Bound(offsets={0: 99}), {}, {0: 50}) == {0: 50}  # never past the end
    with pytest.raises(ProcessorError, match=r"backfill\.switch\.offsets names partition 3, "
                                             r"but its topic has 2"):
        check_partitions("orders", BoundedSpec(end=Bound(offsets={3: 1})), [0, 1],
                         fields={"start": "backfill.history", "end": "backfill.switch"})


def test_history_in_the_topic_is_a_range_up_to_the_switch(tmp_path: Path) -> None:
    in_topic = tmp_path / "in_topic.yaml"
    in_topic.write_text((TOPOLOGY % SWITCH).replace(
        f"file: {{path: history.jsonl, key: id}}\n      switch: {{timestamp: {SWITCH}}}",
        "switch: {offsets: {0: 10}}"))
    history = history_spec(load_spec(in_topic), {"orders": 2}, {"orders": {0: 10, 1: 7}})
    src = history.spec.sources["orders"]
    assert src.backfill is None and src.file is None
    assert src.bounded == BoundedSpec(start="earliest", end=Bound(offsets={0: 10, 1: 7}))


def test_identity_is_the_topology_file_and_application(topology_path: Path) -> None:
    first = backfill_identity(load_spec(topology_path), "bf")
    assert first == backfill_identity(load_spec(topology_path), "bf")
    assert first != backfill_identity(load_spec(topology_path), "bf-2")
    topology_path.write_text(TOPOLOGY % (SWITCH + 1))
    assert first != backfill_identity(load_spec(topology_path), "bf")


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_savepoint_from_batch_positions_marks_and_time(tmp_path: Path, topology_path: Path,
                                                       fmt: str) -> None:
    if fmt == "parquet":  # a year of history is more likely Parquet: the same state from it
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(_orders()), tmp_path / "history.parquet")
        topology_path.write_text(topology_path.read_text().replace("history.jsonl",
                                                                   "history.parquet"))
    loaded = load_spec(topology_path)
    topology = build_topology(loaded)
    history = history_spec(loaded, {"orders": PARTITIONS}, {})
    files = {t: FileSinkSpec(path=str(tmp_path / f"{t}.jsonl"))
             for t in build_topology(history).output_topics}
    run = BatchRun(history, load_config(None, bootstrap_servers="unused:9092"), files=files,
                   state_dir=tmp_path / "batch", until={"orders": SWITCH})
    switch = {"orders": {0: 11, 1: 0, 2: 5}}
    root = tmp_path / "sp"
    run.run(end_of_input=False, before_commit=lambda tasks: write_batch_savepoint(
        root, tasks, topology, topology_path, switch, {"identity": "x"}))

    before = [o for o in _orders() if o["ts"] < SWITCH]
    assert run.feeders["orders"].after_until == 80 - len(before)
    manifest = orjson.loads((root / "manifest.json").read_bytes())
    plan_migration(manifest, topology)  # a restore takes it as it is
    assert "store gmv:" in summary(manifest)  # `savepoint inspect` reads it
    assert manifest["source_offsets"] == {"orders": {"partitions": 3,
                                                     "committed": {"0": 11, "1": 0, "2": 5}}}
    assert manifest["backfill"] == {"identity": "x"}

    # a source reader: the switch offset of its live partition, its partition's event time
    per_order = manifest["stores"]["per_order"]
    for p in range(PARTITIONS):
        mine = [o for o in before if partition_for(o["id"].encode(), PARTITIONS) == p]
        record = per_order["position_records"][str(p)]
        assert record["position"] == switch["orders"][p]
        assert "upstream" not in record
        assert record["time"]["max_ts"] == max(o["ts"] for o in mine)
        assert per_order["entries"][str(p)] == len(mine)

    # a repartition reader: position 0, nothing in flight, no upstream marks (row numbers),
    # the upstream watermarks as the history left them
    gmv = manifest["stores"]["gmv"]
    marks = {}
    for p in range(PARTITIONS):
        record = gmv["position_records"][str(p)]
        assert record["position"] == 0 and "upstream" not in record
        marks.update(record["time"]["marks"])
    assert len(marks) == PARTITIONS and all(int(w) < SWITCH for w in marks.values())
    topic = next(iter(manifest["inflight"]))
    assert manifest["inflight"] == {topic: {"partitions": 3, "from_offset": {"0": 0, "1": 0,
                                                                             "2": 0},
                                            "records": {"0": 0, "1": 0, "2": 0}}}
    # the window spanning the switch is open in the state, with the history's part only
    open_entries = [line for p in range(PARTITIONS)
                    for line in read_lines(store_path(root, "gmv", p))]
    assert open_entries, "windows open at the switch are in the savepoint"
    closed = {r["window_start"]
              for r in map(orjson.loads, (tmp_path / "gmv.jsonl").read_bytes().splitlines())}
    assert T0 + 2000 in closed, "windows the history's watermark passed were emitted"
    assert T0 + 5000 not in closed, "the window spanning the switch was not emitted"


def test_cli_refuses_a_topology_without_backfill_in_one_line(tmp_path: Path, capsys) -> None:
    plain = tmp_path / "plain.yaml"
    plain.write_text(TOPOLOGY.split("    backfill:")[0] + TOPOLOGY.split("switch: {timestamp: %d}")[1])
    assert main(["backfill", str(plain), "--bootstrap-servers", "unused:9092",
                 "--state-dir", str(tmp_path / "state")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "no source has `backfill:`" in err[0]
