"""`processor test` end to end (in-process CLI): every example's test file passes, a wrong
expectation exits 1 with a diff, a bad file exits 2 with file:line, --update round-trips,
and a crash between checkpoints gives the uncrashed result (the Python API)."""

from __future__ import annotations

import shutil

import pytest

from processor.cli import main
from processor.testing import TopologyTestDriver
from tests.paths import REPO

TOPOLOGIES = REPO / "topologies"
WITH_TESTS = sorted(p for p in TOPOLOGIES.glob("*.yaml")
                    if not p.name.endswith(".test.yaml")
                    and (TOPOLOGIES / p.name.replace(".yaml", ".test.yaml")).exists())


@pytest.mark.parametrize("topology", WITH_TESTS, ids=lambda p: p.stem)
def test_example_test_files_pass(topology, capsys):
    assert main(["test", str(topology)]) == 0, capsys.readouterr().out
    assert "ok " in capsys.readouterr().out


def test_a_wrong_expectation_exits_1_with_a_diff(tmp_path, capsys):
    wrong = tmp_path / "wrong.test.yaml"
    text = (TOPOLOGIES / "revenue_per_user.test.yaml").read_text()
    wrong.write_text(text.replace("revenue: 15.5", "revenue: 16", 1))
    assert main(["test", str(TOPOLOGIES / "revenue_per_user.yaml"), str(wrong)]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "-{key: u1" in out and "revenue: 16" in out and "revenue: 15.5" in out


def test_a_bad_test_file_exits_2_with_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.test.yaml"
    bad.write_text("tests:\n  - name: x\n    steps:\n      - input:\n          orders:\n"
                   "            - {key: a, valu: 1}\n      - advance: soon\n      - input: {nope: []}\n")
    assert main(["test", str(TOPOLOGIES / "revenue_per_user.yaml"), str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:6: tests[0].steps[0].input.orders[0].valu: unknown field" in err
    assert f"{bad}:7: tests[0].steps[1]: not a duration" in err
    assert "Traceback" not in err
    bad.write_text("tests:\n  - name: x\n    steps:\n      - input: {nope: []}\n")
    assert main(["test", str(TOPOLOGIES / "revenue_per_user.yaml"), str(bad)]) == 2
    assert f"{bad}:4: tests[0].steps[0].input.nope: no source 'nope'" in capsys.readouterr().err


def test_update_writes_the_actual_outputs_and_keeps_the_inputs(tmp_path, capsys):
    golden = tmp_path / "golden.test.yaml"
    shutil.copy(TOPOLOGIES / "revenue_per_user.test.yaml", golden)
    text = golden.read_text()
    golden.write_text(text.replace("revenue: 15.5", "revenue: 16"))
    topology = str(TOPOLOGIES / "revenue_per_user.yaml")
    assert main(["test", topology, str(golden)]) == 1
    assert main(["test", "--update", topology, str(golden)]) == 0
    assert main(["test", topology, str(golden)]) == 0
    updated = golden.read_text()
    assert "revenue: 15.5" in updated and "status: cancelled" in updated
    assert "timestamp: 1000" in updated


ORDER = {"user": "u1", "amount": 10, "status": "paid", "country": "fr", "ts": 1000}


def _totals(crash: bool, tmp_path) -> list:
    with TopologyTestDriver(TOPOLOGIES / "revenue_per_user.yaml", partitions={"orders": 3},
                            state_dir=tmp_path / ("c" if crash else "n"),
                            auto_checkpoint=False) as driver:
        for i in range(6):
            driver.pipe("orders", f"o{i}", {**ORDER, "user": f"u{i % 2}", "amount": i + 1},
                        1000 + i)
            driver.run()
            if i == 2:
                driver.checkpoint()
        if crash:
            driver.crash()
        driver.auto_checkpoint = True
        driver.run()
        state = driver.store("totals")
        # the latest result per key (how many intermediate updates go out depends on when
        # checkpoints flush the aggregate cache, as in the worker)
        latest = {r["key"]: r["value"] for r in driver.output("totals")}
        return [latest, sorted(state.items())]


def test_a_crash_between_checkpoints_gives_the_uncrashed_result(tmp_path):
    crashed, clean = _totals(True, tmp_path), _totals(False, tmp_path)
    assert crashed == clean
    finals = clean[0]
    assert finals["u0"]["revenue"] == 1 + 3 + 5 and finals["u1"]["revenue"] == 2 + 4 + 6
