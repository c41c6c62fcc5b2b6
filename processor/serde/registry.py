"""A small Confluent Schema Registry client over urllib: the two calls a serde needs.

* `schema_by_id(id)`: GET /schemas/ids/{id}; the writer schema of a framed record.
* `register(subject, schema)`: POST /subjects/{subject}/versions; the id to frame records with.

Both are cached for the life of the client (schema ids are immutable in a registry), so a
stream costs one HTTP request per distinct id or schema, never one per record. Ids that failed
for good (not found, not Avro) are remembered for 30 s too, so a burst of records with a bad id
does not hammer the registry; transient failures are not remembered, so a retry asks again.
No new HTTP dependency: these are two JSON requests, made rarely.

Credentials (keyword arguments, or `user:password@` in the URL) are sent as HTTP basic auth and
never appear in a message or repr: the URL is shown without them and the password as '***'.
"""

from __future__ import annotations

import base64
import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from processor.serde.errors import RegistryError, SchemaError

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
_ACCEPT = f"{CONTENT_TYPE}, application/json"
_FAILED_TTL_S = 30.0  # how long an id the registry did not have (404) is not asked for again
_FAILED_MAX = 1024


def _split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """`http://u:p@host:8081/` -> (`http://host:8081`, 'u', 'p')."""
    parts = urllib.parse.urlsplit(url.strip())
    try:
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        parts = parts._replace(netloc="")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SchemaError(f"schema registry URL must be http(s)://host[:port], got "
                          f"{parts.scheme or '?'}://{parts.hostname or '?'}")
    netloc = parts.netloc.rpartition("@")[2]
    base = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    user = urllib.parse.unquote(parts.username) if parts.username else None
    password = urllib.parse.unquote(parts.password) if parts.password else None
    return base, user, password


class SchemaRegistry:
    """Client for one registry. Its caches are plain dicts, so threads may share it: a race costs
    at most a duplicate request."""

    def __init__(self, url: str, *, username: str | None = None, password: str | None = None,
                 timeout_s: float = 10.0) -> None:
        self.url, url_user, url_password = _split_credentials(url)
        self.username = username if username is not None else url_user
        password = password if password is not None else url_password
        self._has_password = bool(password)
        self._auth: str | None = None
        if self.username is not None:
            token = f"{self.username}:{password or ''}".encode()
            self._auth = "Basic " + base64.b64encode(token).decode("ascii")
        self.timeout_s = timeout_s
        self._by_id: dict[int, Any] = {}
        self._ids: dict[tuple[str, str], int] = {}
        self._failed: dict[int, tuple[float, str, int | None]] = {}  # id -> until, message, status

    def __repr__(self) -> str:
        auth = ""
        if self.username is not None:
            auth = f", username={self.username!r}, password={'***' if self._has_password else None}"
        return f"SchemaRegistry({self.url!r}{auth})"

    def schema_by_id(self, schema_id: int) -> Any:
        """The Avro schema (parsed JSON) registered under `schema_id`."""
        cached = self._by_id.get(schema_id)
        if cached is not None:
            return cached
        failed = self._failed.get(schema_id)
        if failed is not None and time.monotonic() < failed[0]:
            raise RegistryError(failed[1], status=failed[2])
        try:
            schema = self._fetch(schema_id)
        except RegistryError as exc:
            if not exc.transient:  # an id the registry does not have or we cannot use
                if len(self._failed) >= _FAILED_MAX:
                    self._failed.clear()
                self._failed[schema_id] = (time.monotonic() + _FAILED_TTL_S, str(exc), exc.status)
            raise
        self._by_id[schema_id] = schema
        return schema

    def _fetch(self, schema_id: int) -> Any:
        path = f"/schemas/ids/{schema_id}"
        body = self._request("GET", path)
        schema_type = body.get("schemaType", "AVRO")
        if schema_type != "AVRO":
            raise RegistryError(f"schema {schema_id} is a {schema_type} schema, not Avro", status=200)
        if body.get("references"):
            raise RegistryError(f"schema {schema_id} uses schema references, which are not "
                                "supported", status=200)
        text = body.get("schema")
        try:
            if not isinstance(text, str):
                raise ValueError("no 'schema' string")
            return json.loads(text)
        except ValueError as exc:
            raise RegistryError(f"{self._where('GET', path)}: malformed response ({exc})",
                                status=200) from None

    def register(self, subject: str, schema: Any) -> int:
        """Register `schema` (JSON data) under `subject`; returns its id (existing or new)."""
        text = json.dumps(schema, separators=(",", ":"), sort_keys=True)
        key = (subject, text)
        cached = self._ids.get(key)
        if cached is not None:
            return cached
        path = f"/subjects/{urllib.parse.quote(subject, safe='')}/versions"
        body = self._request("POST", path, {"schema": text})
        schema_id = body.get("id")
        if not isinstance(schema_id, int):
            raise RegistryError(f"{self._where('POST', path)}: response has no integer 'id'",
                                status=200)
        self._ids[key] = schema_id
        self._by_id.setdefault(schema_id, schema)
        return schema_id

    def _where(self, method: str, path: str) -> str:
        return f"schema registry {self.url}: {method} {path}"

    def _request(self, method: str, path: str, payload: Any = None) -> dict[str, Any]:
        headers = {"Accept": _ACCEPT}
        data = None
        if payload is not None:
            data = json.dumps(payload).encode()
            headers["Content-Type"] = CONTENT_TYPE
        if self._auth:
            headers["Authorization"] = self._auth
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise self._http_error(method, path, exc) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise RegistryError(f"{self._where(method, path)}: unreachable ({reason})") from None
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise RegistryError(f"{self._where(method, path)}: response is not a JSON object",
                                status=200)
        return body

    def _http_error(self, method: str, path: str, exc: urllib.error.HTTPError) -> RegistryError:
        """Confluent errors carry {"error_code": 40403, "message": "Schema 7 not found"}."""
        detail, code = exc.reason, None
        try:
            body = json.loads(exc.read() or b"null")
            if isinstance(body, dict):
                detail = body.get("message", detail)
                code = body.get("error_code") if isinstance(body.get("error_code"), int) else None
        except (ValueError, OSError):
            pass
        finally:
            exc.close()
        suffix = f", error {code}" if code is not None else ""
        return RegistryError(f"{self._where(method, path)}: HTTP {exc.code} ({detail}{suffix})",
                             status=exc.code, error_code=code)
