"""The README's first command: `processor demo` on the embedded broker (Tansu, classic group
protocol) prints live per-user totals and ends cleanly. Runs in every lane: it starts its own
broker unless KAFKA_BOOTSTRAP_SERVERS names one."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.integration.kafka import ROOT

pytestmark = pytest.mark.integration


def test_demo_prints_live_totals_and_exits_0():
    env = {k: v for k, v in os.environ.items()
           if k != "KAFKA_BOOTSTRAP_SERVERS" and not k.startswith("PROCESSOR_")}
    done = subprocess.run([sys.executable, "-m", "processor", "demo", "--seconds", "6",
                           "--rate", "500"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "embedded Tansu" in done.stdout
    updates = [int(n) for n in re.findall(r"(\d+) updates on topic revenue-per-user", done.stdout)]
    assert updates and updates[-1] > 100, done.stdout[-2000:]
    assert re.search(r"^\s+u\d+\s+\d+\s+[\d.]+", done.stdout, re.M), "no per-user row printed"
    assert "worker stopped (exit 0)" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
