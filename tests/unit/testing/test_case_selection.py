"""`processor test --case NAME`: only the named cases run (exact names or globs, repeatable),
--update rewrites only them, and a name matching no case is one error line listing the cases."""

from __future__ import annotations

from processor.cli import main
from tests.paths import REPO

TOPOLOGY = REPO / "topologies" / "revenue_per_user.yaml"
TESTS = REPO / "topologies" / "revenue_per_user.test.yaml"
TOTALS = "totals per user, cancelled and non-positive orders ignored"
CRASH = "a crash between checkpoints gives the uncrashed result"


def _ran(out: str) -> list[str]:
    return [line.split(": ", 1)[1].rsplit(" (", 1)[0] for line in out.splitlines()
            if line.startswith(("ok ", "FAIL "))]


def test_exact_names_and_globs_select_cases(capsys):
    assert main(["test", str(TOPOLOGY), "--case", CRASH]) == 0
    assert _ran(capsys.readouterr().out) == [CRASH]
    assert main(["test", str(TOPOLOGY), "--case", "totals*"]) == 0
    assert _ran(capsys.readouterr().out) == [TOTALS]
    assert main(["test", str(TOPOLOGY), "--case", "*crash*", "--case", TOTALS]) == 0
    assert _ran(capsys.readouterr().out) == [TOTALS, CRASH]


def test_an_unknown_case_is_one_error_line_naming_the_cases(capsys):
    assert main(["test", str(TOPOLOGY), "--case", CRASH, "--case", "totalz*"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing ran
    assert captured.err == (f"error: --case 'totalz*': no such case in {TESTS} "
                            f"(cases: {TOTALS!r}, {CRASH!r})\n")


def test_update_rewrites_only_the_selected_cases(tmp_path, capsys):
    wrong = tmp_path / "wrong.test.yaml"
    wrong.write_text(TESTS.read_text().replace("revenue: 15.5", "revenue: 16"))  # both cases
    assert main(["test", "--update", str(TOPOLOGY), str(wrong), "--case", CRASH]) == 0
    capsys.readouterr()
    assert main(["test", str(TOPOLOGY), str(wrong)]) == 1
    assert [line.rsplit(" (", 1)[0] for line in capsys.readouterr().out.splitlines()
            if line.startswith(("ok", "FAIL"))] == [f"FAIL {wrong}: {TOTALS}",
                                                    f"ok   {wrong}: {CRASH}"]
