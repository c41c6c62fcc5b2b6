"""POST /stop on a real HTTP server (observability/http.py with runtime/serving/endpoint.py's
RemoteStop), asked with the client `savepoint create --stop-workers` uses: refused to everyone
without remote_stop_token, refused without the right bearer token, a check that stops nothing,
a stop that sets the flag SIGTERM sets, and the same answer (idempotent) when asked again."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator

import orjson
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from processor.observability.http import HttpServer
from processor.runtime.config import load_config
from processor.runtime.serving.endpoint import RemoteStop
from processor.tools.broker import free_port
from processor.tools.stop_workers import post_stop


class Flag:
    """What Worker.stop / Worker._stopping are to the endpoint."""

    def __init__(self) -> None:
        self.stopping = False
        self.calls = 0

    def stop(self) -> None:
        self.calls += 1
        self.stopping = True


def _serve(token: str | None, flag: Flag) -> HttpServer:
    remote = RemoteStop(SecretStr(token) if token is not None else None, "w-1", stop=flag.stop,
                        stopping=lambda: flag.stopping)
    ok = lambda: (200, {})  # noqa: E731
    return HttpServer(0, CollectorRegistry(), health=ok, ready=ok, stop=remote.answer,
                      host="127.0.0.1").start()


@pytest.fixture
def flag() -> Flag:
    return Flag()


@pytest.fixture
def on(flag: Flag) -> Iterator[str]:
    server = _serve("s3cret", flag)
    yield f"http://127.0.0.1:{server.port}"
    server.stop()


def test_off_by_default_refuses_everyone(flag: Flag) -> None:
    server = _serve(None, flag)
    try:
        url = f"http://127.0.0.1:{server.port}"
        for token in (None, "anything"):
            for check in (True, False):
                status, body = post_stop(url, token, check=check)
                assert status == 403 and body["reason"] == "off", body
                assert "set remote_stop_token" in body["error"]
        assert flag.calls == 0 and not flag.stopping
    finally:
        server.stop()


def test_wrong_or_missing_token_is_refused(on: str, flag: Flag) -> None:
    for token in (None, "wrong", "s3cret-but-longer", ""):
        status, body = post_stop(on, token, check=False)
        assert (status, body["reason"]) == (403, "token"), body
    assert flag.calls == 0


def test_check_stops_nothing_then_stop_is_idempotent(on: str, flag: Flag) -> None:
    assert post_stop(on, "s3cret", check=True) == (
        200, {"worker_id": "w-1", "allowed": True, "stopping": False})
    assert flag.calls == 0
    assert post_stop(on, "s3cret", check=False) == (
        202, {"worker_id": "w-1", "stopping": True, "already": False})
    assert flag.calls == 1 and flag.stopping
    assert post_stop(on, "s3cret", check=False) == (
        202, {"worker_id": "w-1", "stopping": True, "already": True})
    assert post_stop(on, "s3cret", check=True)[1]["stopping"] is True
    assert flag.calls == 1  # asked twice, stopped once


def test_only_post_stop(on: str, flag: Flag) -> None:
    with pytest.raises(urllib.error.HTTPError) as got:  # GET /stop is not a route
        urllib.request.urlopen(f"{on}/stop", timeout=5)
    assert got.value.code == 404
    req = urllib.request.Request(f"{on}/other", data=b"", method="POST")
    with pytest.raises(urllib.error.HTTPError) as got:
        urllib.request.urlopen(req, timeout=5)
    assert got.value.code == 404 and orjson.loads(got.value.read())["paths"] == ["/stop"]
    assert flag.calls == 0


def test_unreachable_worker_is_reported_not_raised() -> None:
    status, body = post_stop(f"http://127.0.0.1:{free_port()}", "s3cret", check=True)
    assert status is None and body["error"]


def test_token_is_a_secret_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROCESSOR_REMOTE_STOP_TOKEN", "t0ken-value")
    config = load_config()
    assert config.remote_stop_token is not None
    assert config.remote_stop_token.get_secret_value() == "t0ken-value"
    assert config.masked()["remote_stop_token"] == "***"
    monkeypatch.delenv("PROCESSOR_REMOTE_STOP_TOKEN")
    assert load_config().remote_stop_token is None
