"""A stand-in for the Confluent Schema Registry, for tests only.

No Confluent Schema Registry server can be installed on this machine (it is a Java service that
is on neither PyPI, Debian nor npm), so this module implements, with the standard library's
http.server, exactly the part of its REST API that processor.serde.registry (through
confluent_kafka.schema_registry's client) speaks, with the same request and response shapes:

  GET  /schemas/ids/{id}
       200 {"schema": "<schema as a JSON string>"[, "references": [...]]}  (no "schemaType":
           absent means AVRO)
       404 {"error_code": 40403, "message": "Schema {id} not found"}
  GET  /subjects/{subject}/versions/{version}
       200 {"subject": ..., "version": N, "id": N, "schema": ...[, "references": [...]]}
       404 {"error_code": 40402, "message": "Version {version} not found."}
  POST /subjects/{subject}/versions   body {"schema": "<JSON string>"[, "schemaType": ...]
                                            [, "references": [{"name", "subject", "version"}]]}
       200 {"id": N}  ids are global and start at 1; a schema equal (as parsed JSON) to one
                      already registered gets that schema's id, under any subject; versions
                      count from 1 per subject
       422 {"error_code": 42201, "message": "Invalid schema ..."} if "schema" is not JSON
  POST /oauth/token   (with `oauth_client`) an OAuth client-credentials grant: client id and
       secret as HTTP basic auth -> 200 {"access_token": ..., "expires_in": 3600, ...}
  anything else: 404 {"error_code": 404, ...}; query strings (?normalize=..., ?subject=...) are
  ignored (logged apart from the path). With `credentials`, a request without that HTTP basic
  auth gets 401 {"error_code": 401, "message": "Unauthorized"}; with `bearer_token` (or the
  token issued to `oauth_client`), the same for a request without `Authorization: Bearer`.
  With `tls` (an ssl.SSLContext of the server side) it speaks https.

Not implemented: compatibility checks, deletion, contexts, modes.
Test hooks: `requests` logs every request (method, path, query, headers, body);
`fail_next(status, n)` answers the next n requests with that status (an overloaded registry).
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple
from urllib.parse import unquote, urlsplit


class Request(NamedTuple):
    method: str
    path: str  # without the query string
    authorization: str | None
    content_type: str | None
    body: bytes
    query: str = ""
    headers: dict[str, str] = {}


class RegistryServer:
    """The registry's state and its HTTP server on 127.0.0.1, on an ephemeral port."""

    def __init__(self, credentials: tuple[str, str] | None = None, *, bearer_token: str | None = None,
                 oauth_client: tuple[str, str] | None = None, tls: ssl.SSLContext | None = None) -> None:
        self.credentials = credentials
        self.bearer_token = bearer_token
        self.oauth_client = oauth_client
        self.issued_token = "issued-" + os.urandom(6).hex()
        self.schemas: dict[int, dict[str, Any]] = {}  # id -> {"schema": str, "schemaType": ...}
        self.subjects: dict[str, list[int]] = {}
        self.requests: list[Request] = []
        self._failures: list[int] = []
        self._lock = threading.Lock()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._http.daemon_threads = True
        self._scheme = "http"
        if tls is not None:
            self._http.socket = tls.wrap_socket(self._http.socket, server_side=True)
            self._scheme = "https"
        self._thread = threading.Thread(target=self._http.serve_forever, args=(0.02,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._http.server_address[:2]
        return f"{self._scheme}://{host}:{port}"

    def __enter__(self) -> RegistryServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(timeout=5)

    def fail_next(self, status: int, n: int = 1) -> None:
        with self._lock:
            self._failures.extend([status] * n)

    def count(self, method: str, path: str) -> int:
        """How many requests were `method` on `path` (query ignored); a final `*` matches any rest."""
        def matches(seen: str) -> bool:
            return seen.startswith(path[:-1]) if path.endswith("*") else seen == path
        return sum(1 for r in self.requests if r.method == method and matches(r.path))

    def register(self, subject: str, schema_text: str, schema_type: str | None = None,
                 references: list[dict[str, Any]] | None = None) -> int:
        parsed = json.loads(schema_text)
        kind = None if schema_type in (None, "AVRO") else schema_type
        with self._lock:
            schema_id = next((i for i, e in self.schemas.items()
                              if json.loads(e["schema"]) == parsed and e.get("schemaType") == kind
                              and e.get("references") == (references or None)), None)
            if schema_id is None:
                schema_id = len(self.schemas) + 1
                self.schemas[schema_id] = {"schema": schema_text}
                if kind:
                    self.schemas[schema_id]["schemaType"] = kind
                if references:
                    self.schemas[schema_id]["references"] = references
            versions = self.subjects.setdefault(subject, [])
            if schema_id not in versions:
                versions.append(schema_id)
        return schema_id

    def answer(self, request: Request) -> tuple[int, dict[str, Any]]:
        """Route one request: (HTTP status, JSON body)."""
        method, path, auth, body = request.method, request.path, request.authorization, request.body
        with self._lock:
            self.requests.append(request)
            if self._failures:
                status = self._failures.pop(0)
                return status, {"error_code": status * 100, "message": "injected failure"}
        if path == "/oauth/token" and method == "POST" and self.oauth_client is not None:
            if auth != _basic(self.oauth_client):
                return 401, {"error": "invalid_client"}
            return 200, {"access_token": self.issued_token, "token_type": "Bearer",
                         "expires_in": 3600}
        allowed = {_basic(self.credentials)} if self.credentials else set()
        if self.bearer_token is not None:
            allowed.add(f"Bearer {self.bearer_token}")
        if self.oauth_client is not None:
            allowed.add(f"Bearer {self.issued_token}")
        if allowed and auth not in allowed:
            return 401, {"error_code": 401, "message": "Unauthorized"}
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if method == "GET" and len(parts) == 3 and parts[:2] == ["schemas", "ids"]:
            entry = self.schemas.get(int(parts[2])) if parts[2].isdigit() else None
            if entry is None:
                return 404, {"error_code": 40403, "message": f"Schema {parts[2]} not found"}
            return 200, dict(entry)
        if method == "GET" and len(parts) == 4 and parts[0] == "subjects" and parts[2] == "versions":
            versions = self.subjects.get(parts[1], [])
            number = int(parts[3]) if parts[3].isdigit() else 0
            if not 1 <= number <= len(versions):
                return 404, {"error_code": 40402, "message": f"Version {parts[3]} not found."}
            schema_id = versions[number - 1]
            return 200, {"subject": parts[1], "version": number, "id": schema_id,
                         **self.schemas[schema_id]}
        if method == "POST" and len(parts) == 3 and parts[0] == "subjects" and parts[2] == "versions":
            try:
                request = json.loads(body)
                return 200, {"id": self.register(parts[1], request["schema"],
                                                 request.get("schemaType"),
                                                 request.get("references"))}
            except (ValueError, KeyError, TypeError) as exc:
                return 422, {"error_code": 42201, "message": f"Invalid schema: {exc}"}
        return 404, {"error_code": 404, "message": "HTTP 404 Not Found"}


def _basic(credentials: tuple[str, str]) -> str:
    return "Basic " + base64.b64encode(":".join(credentials).encode()).decode()


def _handler_for(server: RegistryServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            target = urlsplit(self.path)
            status, payload = server.answer(Request(self.command, target.path,
                                                    self.headers.get("Authorization"),
                                                    self.headers.get("Content-Type"), body,
                                                    target.query, dict(self.headers)))
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            pass

    return Handler
