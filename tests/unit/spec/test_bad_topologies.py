"""A corpus of broken topologies (tests/fixtures/bad_topologies): each has one defect, and
`processor validate` must reject it with exactly the errors its `# expect:` lines name.

An expect line is `# expect: <line>: <field path>: <message substring>`; the field path is
`-` for errors about the whole file (YAML syntax, not a mapping), which render without one.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from processor.cli import main
from processor.errors import SpecErrors
from processor.spec import load_spec_text
from tests.paths import REPO

ROOT = REPO
CORPUS = ROOT / "tests" / "fixtures" / "bad_topologies"
FIXTURES = sorted(CORPUS.glob("*.yaml"))
EXPECT = re.compile(r"^# expect: (\d+): (\S+): (.+)$")


@dataclass(frozen=True)
class Expected:
    line: int
    field: str
    substring: str

    def prefix(self, path: str) -> str:
        return f"{path}:{self.line}: " + ("" if self.field == "-" else f"{self.field}:")


def expectations(path: Path) -> list[Expected]:
    """The leading `# expect:` lines of a fixture (the first line must be one)."""
    out = []
    for text in path.read_text(encoding="utf-8").splitlines():
        match = EXPECT.match(text)
        if not match:
            break
        out.append(Expected(int(match[1]), match[2], match[3]))
    return out


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def test_corpus_is_large_enough():
    assert len(FIXTURES) >= 30


def test_every_fixture_states_its_expectation():
    missing = [p.name for p in FIXTURES if not expectations(p)]
    assert not missing, f"fixtures without a first-line `# expect:` comment: {missing}"


def test_fixture_defects_are_distinct():
    """No padding: two fixtures never expect the same error at the same field."""
    seen: dict[tuple[str, str], str] = {}
    for path in FIXTURES:
        for exp in expectations(path):
            key = (exp.field, exp.substring)
            assert key not in seen, f"{path.name} repeats {seen[key]}"
            seen[key] = path.name


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda p: p.stem)
def test_validate_rejects_fixture_precisely(fixture: Path, capsys):
    path = str(fixture)
    expected = expectations(fixture)
    assert main(["validate", path]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    errors = error_lines(captured.err)
    for exp in expected:
        hits = [e for e in errors if exp.prefix(path) in e and exp.substring in e]
        assert hits, f"expected {exp.prefix(path)} ... {exp.substring!r}; got:\n" + "\n".join(errors)
    assert len(errors) == len(expected), "more errors than the one defect:\n" + "\n".join(errors)


SUBPROCESS_SAMPLE = ["01_unknown_step_kind", "30_cycle_two_pipelines", "56_yaml_syntax_error",
                     "57_not_a_mapping", "52_python_ref_unknown_module"]


@pytest.mark.parametrize("stem", SUBPROCESS_SAMPLE)
def test_cli_subprocess_exits_2_without_traceback(stem: str):
    (fixture,) = CORPUS.glob(f"{stem}.yaml")
    proc = subprocess.run([sys.executable, "-m", "processor.cli", "validate", str(fixture)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    first = expectations(fixture)[0]
    assert first.prefix(str(fixture)) in proc.stderr


# -- whole-spec checks beyond the corpus: no false alarms, longer cycles ----------------------

CHAIN = """\
name: chain
sources:
  a: {topic: ta}
  b: {topic: tb}
  c: {topic: tc}
pipelines:
  - from: a
    steps:
      - to: {topic: tb}
  - from: b
    steps:
      - to: {topic: tc}
      - to: {topic: td}
  - from: c
    steps:
      - to: {topic: td}
"""


def test_a_chain_of_topics_is_not_a_cycle():
    assert load_spec_text(CHAIN, file="chain.yaml").spec.name == "chain"


def test_a_three_topic_cycle_is_named_whole_at_the_closing_step():
    text = CHAIN.replace("      - to: {topic: tc}\n      - to: {topic: td}\n",
                         "      - to: {topic: tc}\n")
    text = text.replace("      - to: {topic: td}\n", "      - to: {topic: ta}\n")  # c -> a
    with pytest.raises(SpecErrors) as info:
        load_spec_text(text, file="chain.yaml")
    (err,) = info.value.errors
    assert (err.line, err.path) == (15, "pipelines[2].steps[0].to")
    assert err.message.startswith("cycle: ta -> tb -> tc -> ta ")


def test_a_window_and_its_aggregate_naming_one_store_is_one_store():
    text = """\
name: w
sources:
  s: {topic: t}
pipelines:
  - from: s
    steps:
      - window: {tumbling: 1m, late: drop, store: per-minute}
      - aggregate: {n: count(), store: per-minute}
      - to: {topic: out}
"""
    assert load_spec_text(text).spec.name == "w"
