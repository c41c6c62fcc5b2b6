"""`processor upgrade-check OLD NEW` as users run it: the verdict line, one line per reason, the
internal topics touched, what to do today; exit 0 / 3 / 4, and 2 with `file:line` errors for
an invalid file; --json carries the same plus both layouts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.paths import REPO

REVENUE = (REPO / "topologies" / "revenue_per_user.yaml").read_text()


def _check(tmp: Path, new_text: str, *extra: str, old_text: str = REVENUE
           ) -> subprocess.CompletedProcess[str]:
    old, new = tmp / "old.yaml", tmp / "new.yaml"
    old.write_text(old_text)
    new.write_text(new_text)
    return subprocess.run([sys.executable, "-m", "processor", "upgrade-check", str(old), str(new),
                           *extra], cwd=REPO, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("edit", "code", "verdict", "reason"), [
    (("> 0 and", "> 1 and"), 0, "compatible", "compatible: stateless steps: removed filter"),
    (("          last_country:", "          first_country: last(value['country'])\n"
      "          last_country:"), 4, "incompatible",
     "incompatible: store totals: field 'first_country' (last(value['country'])) inserted "
     "before existing fields"),
    (("sum(value['amount'])", "avg(value['amount'])"), 4, "incompatible",
     "incompatible: store totals: field 'revenue': function sum -> avg"),
    (("          last_country: last(value['country'])",
      "          last_country: last(value['country'])\n          smallest: min(value['amount'])"),
     3, "needs a savepoint migration",
     "needs a savepoint migration: store totals: field 'smallest' (min(value['amount'])) "
     "added at the end"),
])
def test_verdicts_and_exit_codes(tmp_path, edit, code, verdict, reason):
    run = _check(tmp_path, REVENUE.replace(*edit))
    assert run.returncode == code, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == f"{verdict}: {tmp_path / 'old.yaml'} -> {tmp_path / 'new.yaml'}"
    assert any(line.strip().startswith(reason) for line in lines[1:]), run.stdout
    assert ("new application `name:`" in run.stdout) == (code != 0)
    assert run.stderr == ""


def test_unchanged_topology(tmp_path):
    run = _check(tmp_path, REVENUE)
    assert run.returncode == 0
    assert run.stdout.splitlines()[1:] == ["  no change to state or internal topics"]


def test_renamed_store_names_its_topics(tmp_path):
    run = _check(tmp_path, REVENUE.replace("store: totals", "store: sums"))
    assert run.returncode == 3, run.stdout
    assert "store sums: same layout as removed store totals: probably a rename" in run.stdout
    assert ("  created: revenue-per-user-sums-changelog, revenue-per-user-sums-repartition"
            in run.stdout)
    assert ("  orphaned (left behind): revenue-per-user-totals-changelog, "
            "revenue-per-user-totals-repartition") in run.stdout


def test_json(tmp_path):
    run = _check(tmp_path, REVENUE.replace("sum(value", "avg(value"), "--json")
    assert run.returncode == 4
    out = orjson.loads(run.stdout)
    assert out["verdict"] == "incompatible" and out["exit_code"] == 4
    assert out["reasons"][0] == {"verdict": "incompatible", "subject": "store totals",
                                 "reason": "field 'revenue': function sum -> avg: its "
                                           "accumulator holds sum() state"}
    assert out["internal_topics"] == {"created": [], "orphaned": [], "changed": []}
    old, new = out["layouts"]["old"]["stores"][0], out["layouts"]["new"]["stores"][0]
    assert old["store"] == new["store"] == "totals" and old["fingerprint"] != new["fingerprint"]


def test_invalid_file_exits_2_with_file_and_line(tmp_path):
    run = _check(tmp_path, REVENUE.replace("count()", "kount()"))
    assert run.returncode == 2
    assert run.stdout == ""
    assert run.stderr.startswith(f"error: {tmp_path / 'new.yaml'}:24:"), run.stderr
    assert "Traceback" not in run.stderr
    missing = subprocess.run([sys.executable, "-m", "processor", "upgrade-check",
                              str(tmp_path / "old.yaml"), str(tmp_path / "nope.yaml")],
                             cwd=REPO, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "nope.yaml" in missing.stderr
