"""The worker's one HTTP port: /metrics, /healthz, /readyz, /state/{store}/{key} and POST /stop.

It runs in a daemon thread and only reads (the Prometheus registry, the loop's heartbeat, the
task table, committed RocksDB state: RocksDB allows concurrent readers), except POST /stop,
which hands the request's bearer token to the owner's `stop` callback; that decides, and at
most sets the flag SIGTERM sets."""

from __future__ import annotations

import logging
import threading
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger("processor.http")

Answer = tuple[int, dict[str, Any]]


class HttpServer:
    def __init__(self, port: int, registry: CollectorRegistry, *, health: Callable[[], Answer],
                 ready: Callable[[], Answer],
                 state: Callable[[str, str, bool, dict[str, str]], Answer] | None = None,
                 stop: Callable[[str | None, bool], Answer] | None = None,
                 host: str = "0.0.0.0") -> None:
        """`stop(token, check)`: POST /stop with the bearer token (None without one); `check`
        (`?check=true`) asks whether a stop would be accepted without stopping."""
        self.registry, self.health, self.ready, self.state = registry, health, ready, state
        self.stop_request = stop
        self.server = ThreadingHTTPServer((host, port), _handler(self))
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="http", daemon=True)

    def start(self) -> HttpServer:
        self._thread.start()
        log.info("http server listening", extra={"port": self.port})
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler(app: HttpServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            split = urllib.parse.urlsplit(self.path)
            path = split.path
            try:
                if path == "/metrics":
                    self._send(200, generate_latest(app.registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    self._json(*app.health())
                elif path == "/readyz":
                    self._json(*app.ready())
                elif path.startswith("/state/") and app.state is not None:
                    parts = path.split("/", 3)
                    if len(parts) != 4 or not parts[2] or not parts[3]:
                        self._json(400, {"error": "use /state/{store}/{key}"})
                        return
                    store, key = urllib.parse.unquote(parts[2]), urllib.parse.unquote(parts[3])
                    forwarded = self.headers.get("X-Processor-Forwarded") is not None
                    query = dict(urllib.parse.parse_qsl(split.query))
                    self._json(*app.state(store, key, forwarded, query))
                else:
                    self._json(404, {"error": "not found",
                                     "paths": ["/metrics", "/healthz", "/readyz", "/state/{store}/{key}"]})
            except Exception as exc:  # never kill the server thread
                log.exception("http request failed", extra={"path": path})
                self._json(500, {"error": f"{type(exc).__name__}: {exc}"})

        def do_POST(self) -> None:
            split = urllib.parse.urlsplit(self.path)
            try:
                if split.path != "/stop" or app.stop_request is None:
                    self._json(404, {"error": "not found", "paths": ["/stop"]})
                    return
                auth = self.headers.get("Authorization") or ""
                token = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
                check = dict(urllib.parse.parse_qsl(split.query)).get("check") == "true"
                self._json(*app.stop_request(token, check))
            except Exception as exc:  # never kill the server thread
                log.exception("http request failed", extra={"path": split.path})
                self._json(500, {"error": f"{type(exc).__name__}: {exc}"})

        def _json(self, status: int, body: dict[str, Any]) -> None:
            self._send(status, orjson.dumps(body, default=str), "application/json")

        def _send(self, status: int, data: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # access logs: not by default
            pass

    return Handler
