"""Log format selection (text on a terminal, JSON otherwise) and log lines around the progress bar."""

from __future__ import annotations

import io
import json
import logging
import threading

import pytest

from processor.observability.logging import (
    JsonFormatter,
    TerminalHandler,
    TextFormatter,
    attach_status_line,
    resolve_format,
    setup_logging,
)
from processor.observability.progress import ProgressBar


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def root_logger():
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield root
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def test_auto_is_text_on_a_terminal_and_json_otherwise():
    assert resolve_format("auto", Tty()) == "text"
    assert resolve_format("auto", io.StringIO()) == "json"
    assert resolve_format("json", Tty()) == "json"  # an explicit choice wins
    assert resolve_format("text", io.StringIO()) == "text"


@pytest.mark.parametrize(("tty", "fmt", "formatter"), [
    (True, "auto", TextFormatter), (False, "auto", JsonFormatter),
    (True, "json", JsonFormatter), (False, "text", TextFormatter),
])
def test_setup_logging_picks_the_formatter(monkeypatch, root_logger, tty, fmt, formatter):
    monkeypatch.setattr("sys.stderr", Tty() if tty else io.StringIO())
    setup_logging("INFO", fmt)
    (handler,) = root_logger.handlers
    assert type(handler.formatter) is formatter


def test_env_variable_and_config_choose_the_format(monkeypatch, tmp_path):
    from processor.runtime.config import load_config

    assert load_config().log_format == "auto"
    monkeypatch.setenv("PROCESSOR_LOG_FORMAT", "text")
    assert load_config().log_format == "text"
    assert load_config(log_format="json").log_format == "json"  # the flag beats the variable


def test_a_log_line_clears_the_bar_and_the_bar_is_redrawn_after_it():
    out = Tty()
    bar = ProgressBar("restoring state", out, width=10, min_interval_s=0)
    handler = TerminalHandler(out)
    handler.setFormatter(TextFormatter())
    log = logging.getLogger("test.progress")
    log.addHandler(handler)
    log.propagate = False
    try:
        handler.status_line = bar
        log.warning("before any bar")  # nothing drawn yet: nothing to clear
        bar.update(50, 200)
        log.warning("a record arrives")
        bar.finish("restore complete")
        log.warning("after the bar")
    finally:
        log.removeHandler(handler)
    drawn = "\rrestoring state [##........]  25.0% 50/200 records\x1b[K"
    lines = out.getvalue().split("\n")
    assert lines[0].endswith("before any bar") and "\r" not in lines[0]
    # the bar, then cleared, the record on a line of its own, then the bar again
    assert lines[1].startswith(drawn + "\r\x1b[K")
    assert lines[1].endswith("a record arrives")
    assert lines[2] == drawn + "\rrestore complete\x1b[K"
    assert lines[3].endswith("after the bar") and "\r" not in lines[3]


def test_concurrent_log_lines_never_split_the_bar():
    out = Tty()
    bar = ProgressBar("restoring state", out, width=10, min_interval_s=0)
    handler = TerminalHandler(out)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.status_line = bar
    log = logging.getLogger("test.progress.threads")
    log.addHandler(handler)
    log.propagate = False

    def logging_thread() -> None:
        for i in range(200):
            log.warning("line %d", i)

    thread = threading.Thread(target=logging_thread)
    try:
        thread.start()
        for done in range(200):
            bar.update(done, 200)
        thread.join()
        bar.finish("done")
    finally:
        log.removeHandler(handler)
    for chunk in out.getvalue().split("\n"):
        # every piece between carriage returns is a whole bar, a clear, or a whole log line
        for piece in chunk.split("\r")[1:-1]:
            assert piece == "\x1b[K" or (piece.startswith("restoring state [")
                                         and piece.endswith("records\x1b[K")), repr(piece)
    assert sorted(int(line.rsplit("line ", 1)[1]) for line in out.getvalue().split("\n")
                  if "line " in line) == list(range(200))


def test_attach_status_line_reaches_the_installed_handler(monkeypatch, root_logger):
    monkeypatch.setattr("sys.stderr", io.StringIO())
    setup_logging("INFO", "json")
    bar = ProgressBar("restoring state", io.StringIO())
    attach_status_line(bar)
    (handler,) = root_logger.handlers
    assert isinstance(handler, TerminalHandler) and handler.status_line is bar
    logging.getLogger("x").info("still JSON", extra={"n": 1})
    attach_status_line(None)
    assert handler.status_line is None


def test_json_logs_stay_one_object_per_line(monkeypatch, root_logger):
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    setup_logging("INFO", "auto")
    logging.getLogger("processor.worker").info("worker started", extra={"topics": ["a"]})
    record = json.loads(err.getvalue())
    assert record["msg"] == "worker started" and record["topics"] == ["a"]
