"""The savepoint directory without a broker: bytes round-trip exactly (JSON shown as JSON only
when re-encoding gives the same bytes), a savepoint appears whole or not at all, inspect reads
it back, and a repartition reader's position maps onto the re-produced in-flight records."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from processor.state.changelog import POSITION_KEY
from processor.timeutil.watermark import UpstreamWatermarks
from processor.tools.savepoint import inspect, summary
from processor.tools.savepoint_format import (
    FORMAT_VERSION,
    SavepointError,
    SavepointWriter,
    decode_bytes,
    encode_bytes,
    inflight_path,
    read_lines,
    read_manifest,
    store_path,
)
from processor.tools.savepoint_restore import _new_position, without_idle
from tests.paths import REPO

SAMPLES = [b'{"orders":3,"revenue":12.5}', b'[1,"a",null]', b'"text"', b"17",
           b'{"a": 1}',  # JSON, but not compact: kept as text so the bytes survive
           "user-é".encode(), b"line\nbreak",
           b"\x00__processor_position__", b"\xff\xfe binary", b"", None]


@pytest.mark.parametrize("data", SAMPLES)
def test_bytes_round_trip_exactly(data: bytes | None) -> None:
    line = orjson.loads(orjson.dumps({**encode_bytes("key", data)}))
    assert decode_bytes(line, "key") == data


def test_json_shown_as_json_other_bytes_as_base64() -> None:
    assert encode_bytes("value", b'{"orders":3}') == {"value": {"orders": 3}}
    assert encode_bytes("value", b'{"a": 1}') == {"value_text": '{"a": 1}'}
    assert encode_bytes("key", b"u1") == {"key_text": "u1"}
    assert encode_bytes("key", b"a\nb") == {"key_b64": "YQpi"}
    assert set(encode_bytes("key", b"\x01\x02")) == {"key_b64"}
    assert encode_bytes("value", None) == {"value": None}


def _manifest() -> dict:
    return {"application": "app", "topology_file": "app.yaml", "topology_sha256": "0" * 64,
            "created_at": "2026-01-01T00:00:00+00:00", "cluster_id": None,
            "source_offsets": {"orders": {"partitions": 2, "committed": {"0": 5, "1": 7}}},
            "stores": {"totals": {"changelog": "app-totals-changelog", "partitions": 2,
                                  "entries": {"0": 2, "1": 1},
                                  "position_records": {"0": {"position": 4, "upstream": {"0": [4, 0]}},
                                                       "1": {"position": 9}}}},
            "inflight": {"app-totals-repartition": {"partitions": 2, "from_offset": {"0": 4, "1": 9},
                                                    "records": {"0": 1, "1": 0}}},
            "bytes": 0, "seconds": 0.1}


def _write(root: Path) -> dict:
    with SavepointWriter(root) as out:
        out.store_entry("totals", 0, b"u1", b'{"orders":1}')
        out.store_entry("totals", 0, b"\x00\x01", b"\xff")
        out.store_entry("totals", 1, b"u2", b'{"orders":2}')
        out.inflight_record("app-totals-repartition", 0, 4, b"u1", b'[0,12,0,{"x":1}]', 1000)
        return out.commit(_manifest())


def test_write_then_read_back(tmp_path: Path) -> None:
    root = tmp_path / "sp"
    written = _write(root)
    assert written["format_version"] == FORMAT_VERSION
    assert read_manifest(root) == written
    lines = list(read_lines(store_path(root, "totals", 0)))
    assert [(decode_bytes(x, "key"), decode_bytes(x, "value")) for x in lines] == [
        (b"u1", b'{"orders":1}'), (b"\x00\x01", b"\xff")]
    assert lines[0] == {"key_text": "u1", "value": {"orders": 1}}  # readable with jq
    (inflight,) = read_lines(inflight_path(root, "app-totals-repartition", 0))
    assert inflight == {"key_text": "u1", "value": [0, 12, 0, {"x": 1}], "offset": 4, "timestamp": 1000}
    assert list(read_lines(store_path(root, "totals", 5))) == []
    assert [p.name for p in tmp_path.iterdir()] == ["sp"]  # no temporary directory left


def test_no_half_savepoint_after_a_failure(tmp_path: Path) -> None:
    root = tmp_path / "sp"
    with pytest.raises(RuntimeError), SavepointWriter(root) as out:
        out.store_entry("totals", 0, b"u1", b"1")
        raise RuntimeError("reading the changelog failed")
    assert list(tmp_path.iterdir()) == []


def test_existing_directory_and_bad_manifests_refused(tmp_path: Path) -> None:
    root = tmp_path / "sp"
    _write(root)
    with pytest.raises(SavepointError, match="already exists"):
        SavepointWriter(root)
    with pytest.raises(SavepointError, match=r"no manifest\.json"):
        read_manifest(tmp_path)
    (root / "manifest.json").write_bytes(orjson.dumps({"format_version": 99}))
    with pytest.raises(SavepointError, match="format version 99"):
        read_manifest(root)
    (root / "manifest.json").write_text("{")
    with pytest.raises(SavepointError, match="not JSON"):
        read_manifest(root)


def test_inspect_summary_and_entries(tmp_path: Path) -> None:
    root = tmp_path / "sp"
    manifest = _write(root)
    text = summary(manifest)
    assert "1 store(s), 2 partition(s), 3 entries, 1 in-flight record(s)" in text
    assert "partition 0: 2 entries, position 4, upstream marks" in text
    out = io.StringIO()
    assert inspect(root, store="totals", out=out) == 3
    assert out.getvalue().splitlines() == ['[0] u1 = {"orders":1}', "[0] 0x0001 = 0xff",
                                           '[1] u2 = {"orders":2}']
    out = io.StringIO()
    assert inspect(root, store="totals", partition=1, limit=5, out=out) == 1
    with pytest.raises(SavepointError, match="no store 'nope'"):
        inspect(root, store="nope")
    with pytest.raises(SavepointError, match=r"partitions 0\.\.1"):
        inspect(root, store="totals", partition=2)


def test_repartition_reader_position_maps_to_reproduced_offsets() -> None:
    # in-flight records at old offsets 10, 11, 13 (12: a transaction marker) now at 0, 1, 2
    sent = [(10, 0), (11, 1), (13, 2)]
    assert _new_position(10, sent, 3) == 0   # nothing absorbed: start at the first
    assert _new_position(4, sent, 3) == 0    # committed offset behind the in-flight start
    assert _new_position(12, sent, 3) == 2   # absorbed 10 and 11 (a store ahead of the commit)
    assert _new_position(14, sent, 3) == 3   # absorbed all: the end
    assert _new_position(7, [], 0) == 0      # nothing in flight


def test_restored_reader_forgets_idleness_at_the_cut() -> None:
    # at the cut all 3 upstream partitions had gone idle (input paused before the stop)
    saved = {"position": 5, "time": {"marks": {"0": 100, "1": 400, "2": 300}, "idle": [0, 1, 2],
                                     "current": 400}}
    record = without_idle(saved)
    assert record["time"]["idle"] == [] and record["position"] == 5
    assert saved["time"]["idle"] == [0, 1, 2]  # the savepoint's record is not changed
    as_saved, restored = UpstreamWatermarks(3), UpstreamWatermarks(3)
    as_saved.restore(saved["time"])
    restored.restore(record["time"])
    # partition 2 reports first after the restore: alone among non-idle partitions it would
    # move the watermark past the others' next records; restored, partition 0 holds it back
    assert as_saved.report(2, 900) == 900
    assert restored.report(2, 900) == 400
    assert restored.report(0, 500) == 400  # partition 1 (at 400) has not reported yet
    assert restored.report(1, 600) == 500
    assert without_idle({"position": 3}) == {"position": 3}


def test_cli_inspect_failures_are_one_line(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "processor", "savepoint", "inspect",
                          str(tmp_path)], cwd=REPO, text=True, capture_output=True)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines() == [f"error: {tmp_path}: not a savepoint "
                                               "(no manifest.json)"]
    root = tmp_path / "sp"
    _write(root)
    run = subprocess.run([sys.executable, "-m", "processor", "savepoint", "inspect", str(root),
                          "--limit", "1"], cwd=REPO, text=True, capture_output=True)
    assert run.returncode == 2 and run.stderr.startswith("error: --partition and --limit")
    assert POSITION_KEY not in run.stdout.encode()
