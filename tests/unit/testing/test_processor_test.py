"""`processor test` end to end (in-process CLI): every example's test file passes, a wrong
expectation exits 1 with a diff, a bad file exits 2 with file:line, --update round-trips,
and a crash between checkpoints gives the uncrashed result (the Python API)."""

from __future__ import annotations

import shutil
import sys

import pytest
import yaml

from processor.cli import main
from processor.testing import TopologyTestDriver
from tests.paths import REPO

TOPOLOGIES = REPO / "topologies"
WITH_TESTS = sorted(p for p in TOPOLOGIES.glob("*.yaml")
                    if not p.name.endswith(".test.yaml")
                    and (TOPOLOGIES / p.name.replace(".yaml", ".test.yaml")).exists())


EXAMPLES = {"card_testing", "clean_orders", "failed_logins", "failed_logins_pattern",
            "fraud_detection", "gmv_dashboard",
            "reconciliation", "revenue_per_user", "user_sessions"}


@pytest.fixture(scope="module")
def fraud_model(tmp_path_factory):
    """A model for fraud_detection's scoring step (its test ignores the scores)."""
    from processor.examples.fraud_model import train_fraud_model

    path = tmp_path_factory.mktemp("model") / "fraud_model.joblib"
    train_fraud_model(path, n_transactions=8000, seed=7)
    return path


@pytest.fixture
def with_model(fraud_model, monkeypatch):
    monkeypatch.setenv("PROCESSOR_FRAUD_MODEL", str(fraud_model))
    yield fraud_model
    scoring = sys.modules.get("fraud_scoring")
    if scoring is not None:
        scoring.reset()  # the next user loads its own model


def test_every_example_ships_with_a_test_file():
    assert {p.stem for p in WITH_TESTS} == EXAMPLES


@pytest.mark.parametrize("topology", WITH_TESTS, ids=lambda p: p.stem)
def test_example_test_files_pass(topology, capsys, with_model):
    code = main(["test", str(topology)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.startswith("ok ") and "FAIL" not in out


def _cases(name: str) -> list[dict]:
    return yaml.safe_load((TOPOLOGIES / f"{name}.test.yaml").read_text())["tests"]


def _inputs(case: dict, source: str) -> list[tuple]:
    return [(r["key"], r["value"]) for step in case["steps"] if isinstance(step, dict)
            for r in step.get("input", {}).get(source, [])]


def test_reconciliation_expectations_agree_with_the_oracle():
    from processor.examples.reconciliation import MAX_OUT_OF_ORDERNESS_MS, expected

    case = _cases("reconciliation")[0]
    orders, payments = _inputs(case, "orders"), _inputs(case, "payments")
    final = max(v["ts"] for _, v in orders + payments) - MAX_OUT_OF_ORDERNESS_MS
    oracle = expected(orders, payments, final)
    written = {r["key"]: r["value"] for topic in ("reconciled", "discrepancies")
               for r in case["expect"][topic]["records"]}
    assert written == oracle
    assert {r["key"] for r in case["expect"]["reconciled"]["records"]} == {
        k for k, v in oracle.items() if v["status"] == "matched"}


def test_fraud_expectations_agree_with_the_oracle(fraud_model):
    from processor.examples.fraud import expected
    from processor.examples.fraud_model import load_model

    case = _cases("fraud_detection")[0]
    rules = dict(_inputs(case, "rules"))
    oracle = expected(_inputs(case, "transactions"), _inputs(case, "customers"), rules,
                      load_model(fraud_model))
    for topic, flagged in (("fraud-alerts", True), ("transactions-scored", False)):
        for r in case["expect"][topic]["records"]:
            want = {k: v for k, v in oracle[r["value"]["txn_id"]].items() if k != "score"}
            assert r["value"] == want and want["flagged"] is flagged


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


GMV = TOPOLOGIES / "gmv_dashboard.yaml"


def _order(country: str, amount: float, ts: int) -> dict:
    return {"country": country, "status": "paid", "amount": amount, "ts": ts}


def test_python_api_idle_partition_released_by_processing_time(tmp_path):
    """Two source partitions, one silent: it holds the watermark back until processing time
    passes its idle_timeout (10 s); then the window closes. The store is readable."""
    with TopologyTestDriver(GMV, partitions={"orders": 2}, state_dir=tmp_path) as driver:
        driver.pipe("orders", "a", _order("FR", 10, 1000), partition=0)
        driver.pipe("orders", "b", _order("FR", 5, 1500), partition=0)
        driver.pipe("orders", "c", _order("FR", 1, 9000), partition=0)
        driver.run()
        assert driver.output("gmv") == []  # partition 1 has no watermark yet
        assert driver.store("gmv")  # the open window is in the store
        driver.advance_time(5_000)
        assert driver.output("gmv") == []
        driver.advance_time(5_000)
        gmv = driver.output("gmv")
        assert [(r["key"], r["value"]) for r in gmv] == [
            ("FR", {"country": "FR", "second": 1000, "orders": 2, "gmv": 15})]


def test_python_api_reads_dead_letters_and_rejects_unknown_names(tmp_path):
    from processor.testing import DriverError

    with TopologyTestDriver(TOPOLOGIES / "clean_orders.yaml", state_dir=tmp_path) as driver:
        driver.pipe("orders", "o1", {"user": "u"}, 5)
        driver.run()
        [letter] = driver.output("clean-orders-dlq")
        assert letter["key"] == "o1" and letter["headers"]["processor.error.class"] == "KeyError"
        with pytest.raises(DriverError, match="no source 'nope'"):
            driver.pipe("nope", "k", {}, 0)
        with pytest.raises(DriverError, match="partition"):
            driver.pipe("orders", "k", {}, 0, partition=3)
        with pytest.raises(DriverError, match="no store"):
            driver.store("nope")


def _latest(outputs: dict) -> dict:
    """The last record per (topic, key, window or group) of every output topic, dead-letter
    headers without their wall-clock time."""
    out = {}
    for topic, records in outputs.items():
        for r in records:
            value = r["value"]
            window = value.get("second", value.get("start")) if isinstance(value, dict) else None
            headers = {k: v for k, v in r.get("headers", {}).items() if k != "processor.error.time"}
            out[(topic, str(r["key"]), window)] = (value, headers)
    return out


@pytest.mark.parametrize("topology", WITH_TESTS, ids=lambda p: p.stem)
def test_crashes_between_checkpoints_give_the_uncrashed_results(topology, tmp_path, with_model):
    """Each example case run again with manual checkpoints, a checkpoint after every even step
    and a crash after every odd one: what a crash drops is replayed, nothing is doubled.
    (The replay reads the dropped input in one batch: where lateness after a repartition
    topic depends on batch boundaries, gmv_dashboard's late case, the steps that make a
    record late are separated by a checkpoint, as the case's own steps are.)"""
    from processor.spec import load_spec
    from processor.testing.cases import load_tests
    from processor.testing.runner import run_case

    spec = load_spec(topology)
    data = yaml.safe_load(topology.with_name(topology.stem + ".test.yaml").read_text())
    for case in data["tests"]:
        steps = []
        for i, step in enumerate(case["steps"]):
            steps += [step, "crash" if i % 2 else "checkpoint"]
        case.update(checkpoints="manual", steps=steps)
    crashed_file = tmp_path / "crashed.test.yaml"
    crashed_file.write_text(yaml.safe_dump(data))
    plain = load_tests(topology.with_name(topology.stem + ".test.yaml"))
    crashed = load_tests(crashed_file)
    for i in range(len(data["tests"])):
        assert _latest(run_case(spec, crashed, i)) == _latest(run_case(spec, plain, i))


def test_exact_subset_ordered_and_ignored_comparisons():
    from processor.testing.cases import Expected
    from processor.testing.runner import compare

    actual = [{"key": k, "value": {"n": n, "score": 0.5}, "timestamp": 0, "partition": 0}
              for k, n in (("a", 1), ("b", 2), ("c", 3))]

    def ok(records, **how):
        return compare(Expected(records=records, ignore=["value.score"], **how), actual)

    a, b, c = ({"key": k, "value": {"n": n}} for k, n in (("a", 1), ("b", 2), ("c", 3)))
    assert ok([a, b, c]) and not ok([a, c, b]) and not ok([a, b])
    assert ok([c, a, b], ordered=False) and not ok([a, b], ordered=False)
    assert ok([a, c], match="subset") and not ok([c, a], match="subset")
    assert ok([c, a], match="subset", ordered=False)
    assert not ok([{"key": "a", "value": {"n": 2}}], match="subset", ordered=False)
    assert ok([{"key": "b"}], match="subset")  # only the fields given are compared
    assert not compare(Expected(records=[a, b, c]), actual)  # the score counts unless ignored


def test_a_record_failing_under_on_error_fail_is_a_failed_case_not_a_traceback(tmp_path, capsys):
    topology = tmp_path / "strict.yaml"
    text = (TOPOLOGIES / "clean_orders.yaml").read_text()
    topology.write_text(text.replace("name: clean-orders", "name: clean-orders\non_error: fail"))
    tests = tmp_path / "strict.test.yaml"
    tests.write_text("tests:\n  - name: no country\n    steps:\n      - input:\n          orders:\n"
                     "            - {key: o1, value: {user: u1, amount: 1}}\n")
    assert main(["test", str(topology)]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "record orders[0]@0" in out and "KeyError" in out
