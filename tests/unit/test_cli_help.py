"""The CLI explains itself: every option of every subcommand has help text naming its default,
and `--version` prints the installed package's version."""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib.metadata import version

import pytest

from processor.cli import build_parser
from tests.paths import REPO


def _options(parser: argparse.ArgumentParser, name: str = "processor"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, subparser in action.choices.items():
                yield from _options(subparser, f"{name} {sub}")
        elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            yield name, action


OPTIONS = list(_options(build_parser()))


@pytest.mark.parametrize(("command", "action"), OPTIONS,
                         ids=[f"{c} {a.dest}" for c, a in OPTIONS])
def test_every_argument_has_help_and_every_option_its_default(command, action):
    assert action.help, f"{command} {action.dest}: no help text"
    if action.option_strings:
        assert "default" in action.help, f"{command} {action.option_strings[0]}: no default"


def test_help_renders_defaults_for_every_subcommand(capsys):
    parser = build_parser()
    commands = sorted({c for c, _ in OPTIONS})
    assert {"processor run", "processor describe", "processor dev-broker"} <= set(commands)
    for command in commands:
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args([*command.split()[1:], "--help"])
        assert exit_.value.code == 0
        out = capsys.readouterr().out
        assert "%(default)" not in out and "(default: None)" not in out, command
    assert "(default: 9092)" in _help(parser, "dev-broker")
    assert "(default: text)" in _help(parser, "describe")


def _help(parser: argparse.ArgumentParser, command: str) -> str:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command].format_help()


def test_version_comes_from_package_metadata():
    proc = subprocess.run([sys.executable, "-m", "processor", "--version"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"processor {version('processor')}"
