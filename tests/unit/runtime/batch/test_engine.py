"""BatchRun and `processor batch` over files, without a broker: bad input rows under each
`on_error` that needs none (skip, fail; dlq writes a topic), a failing expression named by
file and row, the command line's answers, and outputs that appear only when a run succeeds.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from processor import cli
from processor.errors import ProcessorError
from processor.runtime.batch.engine import BatchRun
from processor.runtime.config import WorkerConfig
from processor.spec import load_spec

TOPOLOGY = """\
name: unit-prices
on_error: fail
sources:
  orders:
    topic: orders
    key: {{format: string}}
    value: {{format: json}}
    timestamp: {{field: ts}}
    on_error: {policy}
    file: {{path: orders.jsonl, key: user}}
sinks:
  prices: {{topic: unit-prices, value: {{format: json}}, file: {{path: prices.jsonl, key: user}}}}
pipelines:
  - from: orders
    steps:
      - map:
          fields:
            order: value['order']
            unit: value['amount'] / value['qty']
      - to: prices
"""

T0 = 1_700_000_000_000


def order(i: int, qty: int = 2) -> bytes:
    return orjson.dumps({"order": i, "user": f"u{i % 7}", "amount": 10.0 * i, "qty": qty,
                         "ts": T0 + i * 1000}) + b"\n"


def setup(tmp_path: Path, lines: list[bytes], policy: str = "skip") -> Path:
    (tmp_path / "orders.jsonl").write_bytes(b"".join(lines))
    yaml = tmp_path / "unit_prices.yaml"
    yaml.write_text(TOPOLOGY.format(policy=policy))
    return yaml


def run(yaml: Path, **kwargs: object):  # type: ignore[no-untyped-def]
    return BatchRun(load_spec(yaml), WorkerConfig(), **kwargs).run()  # type: ignore[arg-type]


def rows(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_a_run_writes_every_row_keyed(tmp_path: Path) -> None:
    yaml = setup(tmp_path, [order(i) for i in range(1, 101)])
    summary = run(yaml, chunk_rows=16)
    out = rows(tmp_path / "prices.jsonl")
    assert summary.input_rows == {"orders": 100} and summary.file_rows == {"unit-prices": 100}
    assert out[0] == {"order": 1, "unit": 5.0, "user": "u1"}
    assert [r["order"] for r in out] == list(range(1, 101))  # one partition: file order


def test_bad_line_skipped(tmp_path: Path) -> None:
    lines = [order(i) for i in range(1, 21)]
    lines[4] = b'{"order": 5, "user": "u5", "amount": \n'  # line 5: not JSON
    lines[9] = b'{"order": 10, "user": "u3", "amount": 1, "qty": 1}\n'  # line 10: no `ts`
    yaml = setup(tmp_path, lines, "skip")
    summary = run(yaml, chunk_rows=8)
    assert summary.bad_rows == {"orders": 2}
    assert [r["order"] for r in rows(tmp_path / "prices.jsonl")] == \
        [i for i in range(1, 21) if i not in (5, 10)]


def test_bad_line_fails_naming_file_and_line(tmp_path: Path) -> None:
    lines = [order(i) for i in range(1, 21)]
    lines[12] = b"not json at all\n"
    yaml = setup(tmp_path, lines, "fail")
    with pytest.raises(ProcessorError, match=rf"{tmp_path / 'orders.jsonl'}:13: .*on_error: fail"):
        run(yaml, chunk_rows=8)
    assert not (tmp_path / "prices.jsonl").exists()


def test_failing_expression_names_file_and_row(tmp_path: Path) -> None:
    lines = [order(i) for i in range(1, 41)]
    lines[29] = order(30, qty=0)  # division by zero in the map, row 30
    yaml = setup(tmp_path, lines, "skip")  # the source's policy is for rows, the step's is fail
    with pytest.raises(ProcessorError) as info:
        run(yaml, chunk_rows=8)
    message = str(info.value)
    assert f"{tmp_path / 'orders.jsonl'}, row 30:" in message
    assert "ZeroDivisionError" in message or "division" in message


def test_failed_run_leaves_the_previous_output(tmp_path: Path) -> None:
    yaml = setup(tmp_path, [order(i) for i in range(1, 51)], "fail")
    run(yaml, chunk_rows=8)
    before = (tmp_path / "prices.jsonl").read_bytes()
    assert len(before.splitlines()) == 50
    lines = [order(i) for i in range(1, 301)]
    lines[250] = b"{broken\n"  # the run fails after writing ~250 rows
    (tmp_path / "orders.jsonl").write_bytes(b"".join(lines))
    with pytest.raises(ProcessorError, match=":251:"):
        run(yaml, chunk_rows=8)
    assert (tmp_path / "prices.jsonl").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == \
        ["orders.jsonl", "prices.jsonl", "unit_prices.yaml"]  # no temporary file left


# --- the command line ----------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def root_logging() -> Iterator[None]:
    """`processor batch` installs its log handler on the root logger (on the stderr capsys
    swaps in): put the test run's back, so later tests do not log to a closed stream."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield
    root.handlers[:], _ = saved
    root.setLevel(saved[1])


def error_line(stderr: str) -> str:
    """The one `error:` line of a failed command (the rest of stderr is log), no traceback."""
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    return errors[0]


GMV = Path(__file__).resolve().parents[4] / "topologies" / "gmv_dashboard.yaml"


def gmv_input(path: Path, n: int = 400) -> Path:
    path.write_bytes(b"".join(orjson.dumps(
        {"order_id": f"o{i}", "country": ["de", "fr", "it"][i % 3], "status": "paid",
         "amount": 2.5, "ts": T0 + i * 50}) + b"\n" for i in range(n)))
    return path


def test_cli_runs_a_topic_topology_over_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = gmv_input(tmp_path / "orders.jsonl")
    out = tmp_path / "gmv.jsonl"
    code = cli.main(["batch", str(GMV), "--input", f"orders={src}", "--key", "orders=order_id",
                     "--partitions", "orders=4", "--output", f"gmv={out}",
                     "--output", f"gmv-late-orders={tmp_path / 'late.jsonl'}",
                     "--output-key", "gmv=the_key", "--state-dir", str(tmp_path / "state")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "read 400 from orders rows" in captured.out and f"to {out}" in captured.out
    got = rows(out)
    assert sum(r["orders"] for r in got) == 400  # every window closed at the end of input
    assert {r["country"] for r in got} == {"de", "fr", "it"}
    assert all(r["the_key"] == r["country"] for r in got)  # the record key, as asked
    assert list((tmp_path / "state").iterdir()) == []  # the run's stores removed at the end
    assert (tmp_path / "late.jsonl").read_bytes() == b""


@pytest.mark.parametrize(("argv", "says"), [
    (["--input", "payments={src}"], "no source 'payments'"),
    (["--input", "orders={tmp}/missing.jsonl"], "no such file"),
    (["--input", "orders={tmp}/*.parquet"], "no file matches"),
    ([], "give it a file with --input orders=PATH"),
    (["--input", "orders={src}", "--partitions", "orders=0"], "expected a count >= 1"),
    (["--input", "orders={src}", "--output", "nowhere={tmp}/x.jsonl"], "not a sink or a topic"),
    (["--input", "orders"], "expected NAME=VALUE"),
])
def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 argv: list[str], says: str) -> None:
    src = gmv_input(tmp_path / "orders.jsonl", 10)
    argv = [a.format(src=src, tmp=tmp_path) for a in argv]
    code = cli.main(["batch", str(GMV), "--key", "orders=order_id", *argv,
                     "--output", f"gmv={tmp_path / 'gmv.jsonl'}"])
    err = capsys.readouterr().err
    assert code == 2
    assert says in error_line(err)
    assert not (tmp_path / "gmv.jsonl").exists()


def test_cli_failing_record_exits_with_the_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = [order(i) for i in range(1, 11)]
    lines[6] = order(7, qty=0)
    yaml = setup(tmp_path, lines, "fail")
    code = cli.main(["batch", str(yaml)])
    err = capsys.readouterr().err
    assert code == 2 and "orders.jsonl, row 7: " in error_line(err)
