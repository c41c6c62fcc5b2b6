"""The test driver's watermark step: event time moved without a record, in the driver's input
as a control entry, so it closes windows downstream of a repartition and replays after a crash."""

from __future__ import annotations

import pytest

from processor.cli import main
from processor.testing import DriverError, TopologyTestDriver
from processor.timeutil.watermark import NO_WATERMARK, PartitionWatermark
from tests.paths import REPO

GMV = REPO / "topologies" / "gmv_dashboard.yaml"
REVENUE = REPO / "topologies" / "revenue_per_user.yaml"


def _order(country: str, amount: float, ts: int) -> dict:
    return {"country": country, "status": "paid", "amount": amount, "ts": ts}


def _rows(driver: TopologyTestDriver) -> list[tuple[str, int, int, float]]:
    return sorted((r["key"], r["value"]["second"], r["value"]["orders"], r["value"]["gmv"])
                  for r in driver.output("gmv"))


def test_partition_watermark_advance_never_goes_back():
    wm = PartitionWatermark(2000)
    assert wm.current == NO_WATERMARK
    wm.advance_to(5000)
    assert wm.current == 5000
    wm.observe([4000])  # a record behind the watermark does not move it
    wm.advance_to(3000)
    assert wm.current == 5000
    wm.observe([9000])
    assert wm.current == 7000


def test_a_watermark_closes_windows_after_a_repartition_without_a_later_record(tmp_path):
    """gmv_dashboard: 1 s windows, 2 s out-of-orderness, 1 s allowed lateness, keyed by
    country through a repartition topic. No record after the window: a watermark closes it."""
    with TopologyTestDriver(GMV, state_dir=tmp_path) as driver:
        driver.pipe("orders", "o1", _order("FR", 10, 1000))
        driver.pipe("orders", "o2", _order("DE", 7, 1200))
        driver.pipe("orders", "o3", _order("FR", 2, 2500))
        driver.run()
        assert driver.output("gmv") == []
        driver.pipe_watermark("orders", 2999)  # [1000, 2000) closes at 2000 + 1 s lateness
        driver.run()
        assert _rows(driver) == []
        driver.pipe_watermark("orders", 3000)
        driver.run()
        assert _rows(driver) == [("DE", 1000, 1, 7), ("FR", 1000, 1, 10)]
        driver.pipe_watermark("orders", 4000)
        driver.run()
        assert _rows(driver) == [("DE", 1000, 1, 7), ("FR", 1000, 1, 10), ("FR", 2000, 1, 2)]
        # the watermark is where a record would have put it: a record behind it is late
        driver.pipe("orders", "o4", _order("FR", 4, 2900))
        driver.run()
        late = driver.output("gmv-late-orders")
        assert [(r["key"], r["headers"]["processor.watermark"]) for r in late] == [("FR", "4000")]


def test_every_partition_must_pass_before_the_window_downstream_closes(tmp_path):
    with TopologyTestDriver(GMV, partitions={"orders": 2}, state_dir=tmp_path) as driver:
        driver.pipe("orders", "o1", _order("FR", 10, 1000), partition=0)
        driver.pipe("orders", "o2", _order("FR", 5, 1500), partition=1)
        driver.pipe_watermark("orders", 5000, partition=0)
        driver.run()
        assert _rows(driver) == []  # partition 1 is at -500 (1500 - 2 s)
        driver.pipe_watermark("orders", 5000, partition=1)
        driver.run()
        assert _rows(driver) == [("FR", 1000, 2, 15)]
        with pytest.raises(DriverError, match="2 partition"):
            driver.pipe_watermark("orders", 1, partition=2)


def _crash_run(tmp_path, crash: bool) -> tuple[list, list]:
    with TopologyTestDriver(GMV, state_dir=tmp_path / str(crash), auto_checkpoint=False) as driver:
        driver.pipe("orders", "o1", _order("FR", 10, 1000))
        driver.run()
        driver.checkpoint()
        driver.pipe_watermark("orders", 3000)
        driver.pipe("orders", "o2", _order("FR", 1, 3500))
        driver.run()
        if crash:  # the watermark and the record after it are replayed from the input
            driver.crash()
        for _ in range(3):  # the repartition topic is read once committed
            driver.run()
            driver.checkpoint()
        replayed = _rows(driver)  # only the watermark step closes [1000, 2000) here
        driver.pipe_watermark("orders", 10_000)
        for _ in range(3):
            driver.run()
            driver.checkpoint()
        return replayed, _rows(driver)


def test_a_crash_replays_the_watermark_where_it_was(tmp_path):
    crashed, clean = _crash_run(tmp_path, True), _crash_run(tmp_path, False)
    assert clean == ([("FR", 1000, 1, 10)], [("FR", 1000, 1, 10), ("FR", 3000, 1, 1)])
    assert crashed == clean


def test_a_watermark_on_a_source_without_windows_only_moves_the_position(tmp_path):
    with TopologyTestDriver(REVENUE, state_dir=tmp_path) as driver:
        driver.pipe_watermark("orders", 1000)
        driver.run()
        assert driver.output("totals") == []
        assert all(t.position == 1 for t in driver.tasks if t.topic == "orders"
                   and t.partition == 0)


def _write(tmp_path, steps: str, expect: str = "") -> tuple:
    topo = tmp_path / "gmv.yaml"
    topo.write_text(GMV.read_text())
    tests = tmp_path / "gmv.test.yaml"
    tests.write_text("tests:\n  - name: watermark\n    steps:\n" + steps + expect)
    return topo, tests


STEPS = """\
      - input:
          orders:
            - {key: o1, value: {country: FR, status: paid, amount: 10, ts: 1000}}
            - {key: o2, value: {country: FR, status: paid, amount: 3, ts: 1999}}
"""


@pytest.mark.parametrize("mark", ["3000", "'1970-01-01T00:00:03Z'", "{to: 3000}",
                                  "{to: 3000, partition: 0}"])
def test_processor_test_runs_a_watermark_step(tmp_path, capsys, mark):
    topo, tests = _write(tmp_path, STEPS + f"      - watermark: {{orders: {mark}}}\n",
                         "    expect:\n      gmv:\n"
                         "        - {key: FR, value: {country: FR, second: 1000, orders: 2, "
                         "gmv: 13}}\n")
    assert main(["test", str(topo), str(tests)]) == 0, capsys.readouterr()


def test_without_the_watermark_step_the_window_stays_open(tmp_path, capsys):
    topo, tests = _write(tmp_path, STEPS, "    expect:\n      gmv: []\n")
    assert main(["test", str(topo), str(tests)]) == 0, capsys.readouterr()


@pytest.mark.parametrize(("step", "line", "message"), [
    ("      - watermark: {payments: 10}\n", 8, "tests[0].steps[1].watermark.payments: no source "
                                               "'payments'"),
    ("      - watermark: {orders: yesterday}\n", 8, "neither epoch milliseconds nor ISO-8601"),
    ("      - watermark: {orders: {to: 5, partition: -1}}\n", 8, "greater than or equal to 0"),
    ("      - {watermark: {orders: 5}, advance: 1s}\n", 8, "a step does exactly one thing"),
])
def test_a_bad_watermark_step_exits_2_with_file_and_line(tmp_path, capsys, step, line, message):
    topo, tests = _write(tmp_path, STEPS + step)
    assert main(["test", str(topo), str(tests)]) == 2
    err = capsys.readouterr().err
    assert f"{tests}:{line}:" in err and message in err, err


def test_a_watermark_on_a_table_source_is_refused(tmp_path, capsys):
    topo = tmp_path / "t.yaml"
    topo.write_text("""\
name: enrich
sources:
  orders: {topic: orders}
  users: {topic: users, kind: table}
pipelines:
  - from: orders
    steps:
      - join: {table: users, as: user}
      - to: {topic: out}
""")
    tests = tmp_path / "t.test.yaml"
    tests.write_text("tests:\n  - name: t\n    steps:\n      - watermark: {users: 5}\n")
    assert main(["test", str(topo), str(tests)]) == 2
    err = capsys.readouterr().err
    assert f"{tests}:4:" in err and "source 'users' is a table" in err, err
    with TopologyTestDriver(topo, state_dir=tmp_path / "s") as driver, \
            pytest.raises(DriverError, match="applies to stream sources"):
        driver.pipe_watermark("users", 5)
