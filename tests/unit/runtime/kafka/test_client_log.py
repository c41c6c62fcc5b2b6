"""librdkafka's retries are summarised: the first line of a kind, then a count per interval."""

from __future__ import annotations

import logging

import pytest

from processor.runtime.kafka.client_log import ClientLog

FMT = "%s [%s] %s"
REFUSED = "[thrd:h:1/bootstrap]: h:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: " \
          "Connection refused (after {}ms in state CONNECT)"


def test_repeats_of_a_kind_are_counted_not_printed(caplog: pytest.LogCaptureFixture) -> None:
    client_log = ClientLog(repeat_every_s=3600)
    with caplog.at_level(logging.DEBUG, logger="processor.kafka"):
        for n in range(200):
            client_log.log(logging.ERROR, FMT, "FAIL", f"rdkafka#consumer-{n % 3}",
                           REFUSED.format(n))
        client_log.log(logging.WARNING, FMT, "SASL", "rdkafka#consumer-1", "auth failed")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert "Connection refused" in lines[0] and "auth failed" in lines[1]
    assert client_log.repeats() == 199


def test_a_kind_is_reported_again_with_its_count_after_the_interval(
        caplog: pytest.LogCaptureFixture) -> None:
    client_log = ClientLog(repeat_every_s=0.0)  # every line is past the interval
    with caplog.at_level(logging.DEBUG, logger="processor.kafka"):
        client_log.log(logging.ERROR, FMT, "FAIL", "c", REFUSED.format(1))
        client_log.repeat_every_s = 3600
        client_log.log(logging.ERROR, FMT, "FAIL", "c", REFUSED.format(2))
        client_log.log(logging.ERROR, FMT, "FAIL", "c", REFUSED.format(3))
        client_log.repeat_every_s = 0.0
        client_log.log(logging.ERROR, FMT, "FAIL", "c", REFUSED.format(4))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert lines[1].endswith("(and 2 more like it)")
    assert client_log.repeats() == 0


def test_debug_lines_the_user_asked_for_all_go_through_at_info(
        caplog: pytest.LogCaptureFixture) -> None:
    """librdkafka logs at debug level only with its `debug` property set (e.g. `debug: conf`
    dumps every client's properties, secrets redacted): each line shows, at a worker's INFO."""
    client_log = ClientLog(repeat_every_s=3600)
    with caplog.at_level(logging.INFO, logger="processor.kafka"):
        for prop in ("sasl.password = [redacted]", "sasl.username = app", "acks = all"):
            client_log.log(logging.DEBUG, FMT, "CONF", "rdkafka#producer-1", prop)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3 and "sasl.password = [redacted]" in lines[0]
    assert {r.levelno for r in caplog.records} == {logging.INFO}
