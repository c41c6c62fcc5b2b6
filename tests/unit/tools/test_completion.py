"""`processor completion bash`, run by the real bash: the script is sourced and its function
called with COMP_WORDS/COMP_CWORD as bash sets them at a TAB; the candidates are asserted."""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess

import pytest

from processor.cli import build_parser, main
from processor.tools.completion import _commands

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")

CALL = """source "$0"
complete -p processor >/dev/null || exit 9
COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1))
_processor || exit 8
printf '%s\\n' "${COMPREPLY[@]}"
"""


@pytest.fixture(scope="module")
def script(tmp_path_factory):
    """What `processor completion bash` prints, in a file."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["completion", "bash"]) == 0
    path = tmp_path_factory.mktemp("completion") / "processor.bash"
    path.write_text(out.getvalue())
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A working directory with topology files, another file and a directory."""
    cwd = tmp_path_factory.mktemp("cwd")
    for name in ("topo.yaml", "topo.test.yaml", "notes.txt"):
        (cwd / name).write_text("")
    (cwd / "state").mkdir()
    return cwd


@pytest.fixture(scope="module")
def complete(script, files):
    def run(*words: str) -> list[str]:
        proc = subprocess.run(["bash", "--norc", "--noprofile", "-c", CALL, str(script),
                               "processor", *words], cwd=files, capture_output=True,
                              text=True, timeout=30)
        assert proc.returncode == 0 and proc.stderr == "", proc
        return sorted(line for line in proc.stdout.splitlines() if line)
    return run


def test_subcommands(complete):
    assert complete("ru") == ["run"]
    assert complete("d") == ["demo", "describe", "dev-broker", "dlq"]
    assert complete("dlq", "") == ["inspect", "replay"]
    assert complete("topics", "c") == ["create"]
    assert complete("completion", "") == ["bash"]


def test_options_and_their_choices(complete):
    assert complete("run", "--log-f") == ["--log-format"]
    assert complete("run", "--log-format", "") == ["auto", "json", "text"]
    assert complete("run", "--log-format", "j") == ["json"]
    assert complete("describe", "topo.yaml", "--format", "") == ["dot", "mermaid", "text"]
    assert complete("dev-broker", "--kafka", "") == ["apache", "tansu"]
    assert complete("--v") == ["--version"]


def test_every_command_completes_exactly_its_options(complete):
    for path, parser in _commands(build_parser()):
        options = sorted(o for a in parser._actions for o in a.option_strings)
        assert complete(*path.split(), "-") == options, path


def test_files_for_topologies_directories_for_directories(complete):
    assert complete("validate", "to") == ["topo.test.yaml", "topo.yaml"]
    assert complete("test", "topo.yaml", "topo.t") == ["topo.test.yaml"]  # TESTS...
    assert complete("run", "--config", "n") == ["notes.txt"]
    assert complete("run", "--state-dir", "") == ["state"]
    assert complete("produce", "o") == []  # a topic name: nothing to offer


def test_option_values_are_not_taken_for_positionals(complete):
    assert complete("run", "--config", "notes.txt", "--log-format", "json", "to") == [
        "topo.test.yaml", "topo.yaml"]
    assert complete("run", "--log-format", "=", "json", "to") == [
        "topo.test.yaml", "topo.yaml"]  # --log-format=json, as bash splits it
    assert complete("test", "--case", "topo", "topo.yaml", "topo.t") == ["topo.test.yaml"]
    assert complete("run", "topo.yaml", "") == []  # run takes one topology
    assert complete("run", "--worker-id", "") == []  # free text
