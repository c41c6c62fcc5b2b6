"""`processor test --update` rewrites only the expectations: comments, layout, the other
cases and the long form's match/ordered/ignore stay as written, a case without `expect` gains
one, the result passes, and a second --update changes nothing."""

from __future__ import annotations

import pytest

from processor.cli import main
from tests.paths import REPO

TOPOLOGY = str(REPO / "topologies" / "revenue_per_user.yaml")
O1 = "{key: o1, value: {user: u1, amount: 10, status: paid, country: fr, ts: 1000}, timestamp: 1000}"
O2 = "{key: o2, value: {user: u2, amount: 3, status: paid, country: it, ts: 3000}, timestamp: 3000}"

HEAD = f"""\
# revenue tests: a comment at the top
partitions: {{orders: 1}}   # one partition
tests:
  # the first case keeps its long form
  - name: totals per user
    steps:
      - input:
          orders:   # two users
            - {O1}
            - {O2}
    expect:
      totals:
        ordered: false      # two keys, any order
        ignore: [value.avg_order]
        records:
"""
WRONG = """\
          - {key: u1, value: {revenue: 999}}   # wrong on purpose
"""
NO_EXPECT = f"""\
  - name: no expectation yet
    steps:
      - input: {{orders: [{O1}]}}
      - crash   # a trailing comment
"""
REST = f"""\
  - name: "flow style expect"
    steps: [{{input: {{orders: [{O2}]}}}}]
    expect: {{}}
  - name: a comment before the value, an empty output kept empty
    steps:
      - input:
          orders: [{O1}]
    expect:
      totals:  # the totals
        []
      revenue-per-user-dlq: [{{key: nothing}}]
# the end
"""


@pytest.fixture
def tests_file(tmp_path):
    path = tmp_path / "revenue.test.yaml"
    path.write_text(HEAD + WRONG + NO_EXPECT + REST)
    return path


def _update(path) -> None:
    assert main(["test", "--update", TOPOLOGY, str(path)]) == 0


def test_update_replaces_only_the_expectations(tests_file, capsys):
    assert main(["test", TOPOLOGY, str(tests_file)]) == 1
    _update(tests_file)
    text = tests_file.read_text()
    u1 = ("{key: u1, value: {user: u1, orders: 1, revenue: 10, largest: 10, country: fr}, "
          "timestamp: 1000}")
    u2 = ("{key: u2, value: {user: u2, orders: 1, revenue: 3, largest: 3, country: it}, "
          "timestamp: 3000}")
    # the long form: only `records:` changed (avg_order is ignored, so not written)
    assert text.startswith(HEAD + f"          - {u1}\n          - {u2}\n" + NO_EXPECT.rstrip("\n"))
    # the case without expect gains one after its last line, its comment kept on that line
    full_u1 = u1.replace("revenue: 10,", "revenue: 10, avg_order: 10.0,")
    assert (NO_EXPECT + f"    expect:\n      revenue-per-user:\n        - {full_u1}\n"
            '  - name: "flow style expect"\n') in text
    # a flow-style `expect: {}` is written out in block style
    full_u2 = u2.replace("revenue: 3,", "revenue: 3, avg_order: 3.0,")
    assert (f"    expect:\n      revenue-per-user:\n        - {full_u2}\n"
            "  - name: a comment before the value") in text
    # a sink name keeps its name, its comment and its value's place; an empty output is []
    assert text.endswith(f"      totals:  # the totals\n        - {full_u1}\n"
                         "      revenue-per-user-dlq: []\n# the end\n")
    capsys.readouterr()
    assert main(["test", TOPOLOGY, str(tests_file)]) == 0
    assert capsys.readouterr().out.count("ok   ") == 4


def test_a_second_update_changes_nothing(tests_file):
    _update(tests_file)
    once = tests_file.read_bytes()
    _update(tests_file)
    assert tests_file.read_bytes() == once


def test_windows_line_endings_are_kept(tests_file):
    tests_file.write_bytes(tests_file.read_bytes().replace(b"\n", b"\r\n"))
    _update(tests_file)
    data = tests_file.read_bytes()
    assert data.count(b"\n") == data.count(b"\r\n") > 30
    assert main(["test", TOPOLOGY, str(tests_file)]) == 0


def test_the_examples_update_to_themselves(tmp_path):
    """Every example's expectations, written by --update, pass, and a second --update
    changes nothing (what an author gets when adopting the golden files)."""
    for name in ("clean_orders", "gmv_dashboard", "reconciliation"):
        path = tmp_path / f"{name}.test.yaml"
        source = (REPO / "topologies" / f"{name}.test.yaml").read_text()
        path.write_text(source)
        topology = str(REPO / "topologies" / f"{name}.yaml")
        assert main(["test", "--update", topology, str(path)]) == 0
        once = path.read_text()
        head = source[:source.index("    expect:")]
        assert once.startswith(head)  # the comments, partitions and first case's steps
        assert main(["test", topology, str(path)]) == 0
        assert main(["test", "--update", topology, str(path)]) == 0
        assert path.read_text() == once


def test_an_expectation_it_cannot_rewrite_in_place_leaves_the_file_alone(tmp_path, capsys):
    path = tmp_path / "alias.test.yaml"
    text = (f"tests:\n  - name: a\n    steps: [{{input: {{orders: [{O1}]}}}}]\n"
            "    expect: {totals: &none []}\n"
            f"  - name: b\n    steps: [{{input: {{orders: [{O2}]}}}}]\n"
            "    expect: {totals: *none}\n")
    path.write_text(text)
    assert main(["test", "--update", TOPOLOGY, str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: --update could not rewrite the expectations in place")
    assert err.count("\n") == 1 and path.read_text() == text


def test_a_case_written_in_flow_style_stays_in_flow_style(tmp_path):
    path = tmp_path / "flow.test.yaml"
    path.write_text(f"tests:\n  - {{name: a, steps: [{{input: {{orders: [{O1}]}}}}]}}\n"
                    f"  - {{name: b, steps: [{{input: {{orders: [{O2}]}}}}], "
                    "expect: {totals: {ordered: false, records: []}}}\n")
    _update(path)
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and lines[1].endswith(
        "expect: {revenue-per-user: [{key: u1, value: {user: u1, orders: 1, revenue: 10, "
        "avg_order: 10.0, largest: 10, country: fr}, timestamp: 1000}]}}")
    assert lines[2].endswith("expect: {totals: {ordered: false, records: [{key: u2, value: "
                             "{user: u2, orders: 1, revenue: 3, avg_order: 3.0, largest: 3, "
                             "country: it}, timestamp: 3000}]}}}")
    assert main(["test", TOPOLOGY, str(path)]) == 0
