"""failed_logins_pattern.yaml alerts on the same failures as failed_logins.yaml (the process
function), over random in-order login streams, both run by the in-process test driver.

In order only: the process function reacts to records as they arrive, the pattern matches in
event time, so over disordered input they may differ by design (README, "Patterns").
"""

from __future__ import annotations

import random

import pytest

from processor.testing import TopologyTestDriver
from tests.paths import REPO

TOPOLOGIES = REPO / "topologies"
EVENTS = ("login_failed", "login_failed", "login_failed", "login_ok", "logout")


def _stream(seed: int, n: int) -> list[tuple[str, dict]]:
    rng = random.Random(seed)
    ts, out = 0, []
    for _ in range(n):
        ts += rng.choice((0, 500, 5_000, 15_000, 30_000, 70_000))
        out.append((f"u{rng.randrange(6)}", {"event": rng.choice(EVENTS), "ts": ts}))
    return out


def _alerts(topology: str, stream: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    driver = TopologyTestDriver(TOPOLOGIES / topology, partitions={"logins": 3})
    try:
        for i in range(0, len(stream), 37):  # batches of a few records, as a worker polls
            for key, value in stream[i:i + 37]:
                driver.pipe("logins", key, value, value["ts"])
            driver.run()
        driver.pipe_watermark("logins", stream[-1][1]["ts"] + 3_600_000)
        driver.run()
        return sorted(((r["key"], r["value"]) for r in driver.output("alerts")),
                      key=lambda kv: (kv[0], kv[1]["last_failure_ts"]))
    finally:
        driver.close()


@pytest.mark.parametrize("seed", range(6))
def test_pattern_alerts_equal_the_process_function_alerts(seed):
    stream = _stream(seed, 400)
    expected = _alerts("failed_logins.yaml", stream)
    assert expected, "the stream should make some alerts"
    assert _alerts("failed_logins_pattern.yaml", stream) == expected
