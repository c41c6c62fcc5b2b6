"""The Confluent Schema Registry through confluent_kafka's SchemaRegistryClient, kept to the two
lookups a serde needs and to the project's error model.

* `schema_by_id(id)`: the writer schema of a framed record, parsed for fastavro with its schema
  references (named types registered under other subjects) resolved.
* `register(subject, schema)`: the id to frame records with.

The library brings what production registries ask of a client: TLS with a private CA, mutual
TLS, basic auth, bearer tokens and OAuth client credentials, retries with backoff and failover
between URLs. The hot path never sees it: framing and fastavro decoding stay in avro.py.

Both lookups are cached for the life of the client (schema ids are immutable in a registry), so
a stream costs one request per distinct id or schema, never one per record. Ids that failed for
good (not found, not Avro) are remembered for 30 s too, so a burst of records with a bad id does
not hammer the registry; transient failures are not remembered, so a retry asks again. Library
failures become a RegistryError with the HTTP status (None: no answer), so the serde can tell
"retry" from "dead-letter"; messages name the URL without its credentials and never a secret.
"""

from __future__ import annotations

import functools
import http
import json
import os
import ssl
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

from processor.serde.errors import RegistryError, SchemaError
from processor.serde.schemas import AvroSchema, parse_avro_schema

_FAILED_TTL_S = 30.0  # how long an id the registry did not have (404) is not asked for again
_FAILED_MAX = 1024
T = TypeVar("T")


@dataclass(frozen=True)
class RegistryTls:
    """TLS files for an https registry: the CA that signed its certificate (a PEM file or a
    directory; default: the system's trust store) and a client certificate for mutual TLS."""

    ca_location: str | None = None
    certificate_location: str | None = None
    key_location: str | None = None  # not needed when the certificate file holds the key
    key_password: str | None = field(default=None, repr=False)

    def conf(self) -> dict[str, str]:
        if (self.key_location or self.key_password) and not self.certificate_location:
            raise SchemaError("schema registry TLS: a client key needs its certificate "
                              "(certificate_location)")
        ca = self.ca_location or _system_trust_store()
        return {prop: value for prop, value in (
            ("ssl.ca.location", ca), ("ssl.certificate.location", self.certificate_location),
            ("ssl.key.location", self.key_location), ("ssl.key.password", self.key_password))
            if value}


@dataclass(frozen=True)
class RegistryBearer:
    """Bearer auth: a static `token`, or OAuth client credentials exchanged for tokens at
    `issuer_endpoint_url` (renewed before they expire). Confluent Cloud also wants the
    registry's `logical_cluster` (lsrc-...) and may want an `identity_pool_id`."""

    token: str | None = field(default=None, repr=False)
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    issuer_endpoint_url: str | None = None
    scope: str = ""
    logical_cluster: str = ""
    identity_pool_id: str | None = None

    def conf(self) -> dict[str, str]:
        oauth = {"client_id": self.client_id, "client_secret": self.client_secret,
                 "issuer_endpoint_url": self.issuer_endpoint_url}
        if self.token and any(oauth.values()):
            raise SchemaError("schema registry bearer auth: a static token or OAuth client "
                              "credentials, not both")
        if self.token:
            conf = {"bearer.auth.credentials.source": "STATIC_TOKEN", "bearer.auth.token": self.token}
        else:
            missing = [name for name, value in oauth.items() if not value]
            if missing:
                raise SchemaError(f"schema registry OAuth: {', '.join(missing)} missing")
            conf = {"bearer.auth.credentials.source": "OAUTHBEARER",
                    "bearer.auth.client.id": self.client_id or "",
                    "bearer.auth.client.secret": self.client_secret or "",
                    "bearer.auth.issuer.endpoint.url": self.issuer_endpoint_url or "",
                    "bearer.auth.scope": self.scope}
        conf["bearer.auth.logical.cluster"] = self.logical_cluster
        if self.identity_pool_id:
            conf["bearer.auth.identity.pool.id"] = self.identity_pool_id
        return conf


@dataclass(frozen=True)
class RegistryRetries:
    """Retries of a request that got no answer or HTTP 408/429/5xx, after a random wait of up
    to backoff_ms x 2^attempt (at most backoff_max_ms). None by default: the worker stops on a
    registry it cannot use and its restart retries."""

    max_retries: int = 0
    backoff_ms: int = 1000
    backoff_max_ms: int = 20_000


class _Library(NamedTuple):
    client: Callable[[dict[str, Any]], Any]
    error: type[Exception]
    avro_text: Callable[[str], Any]


@functools.cache
def _library() -> _Library:
    """confluent_kafka.schema_registry, imported with the first client: with httpx and authlib
    it takes 0.2 s that `processor validate` and topologies without a registry need not pay."""
    from confluent_kafka.schema_registry import Schema, SchemaRegistryClient, SchemaRegistryError

    class AvroText(Schema):  # type: ignore[misc]
        """Registered with the request body as before, `{"schema": text}`: the library's own
        adds the defaults `"schemaType": "AVRO"` and `"references": []`."""

        def to_dict(self) -> dict[str, Any]:
            return {"schema": self.schema_str}

    return _Library(SchemaRegistryClient, SchemaRegistryError, AvroText)


def _system_trust_store() -> str | None:
    """The CA file (or directory) ssl's default context trusts, so https verifies against the
    same roots as before the library (which would otherwise use certifi's bundle)."""
    paths = ssl.get_default_verify_paths()
    return next((p for p in (paths.cafile, paths.capath) if p and os.path.exists(p)), None)


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
    """Client for one registry (a comma-separated `url` lists replicas to fail over to).
    Credentials: `username`/`password`, or `user:password@` in the first URL, sent as HTTP basic
    auth; or `bearer`. They never appear in a message or repr. Its caches are plain dicts, so
    threads may share it: a race costs at most a duplicate request."""

    def __init__(self, url: str, *, username: str | None = None, password: str | None = None,
                 timeout_s: float = 10.0, tls: RegistryTls | None = None,
                 bearer: RegistryBearer | None = None,
                 retries: RegistryRetries | None = None) -> None:
        bases, url_user, url_password = zip(*map(_split_credentials, url.split(",")), strict=True)
        self.url = ",".join(bases)
        self.username = username if username is not None else url_user[0]
        password = password if password is not None else url_password[0]
        self._has_password = bool(password)
        self.bearer = bearer
        self.timeout_s = timeout_s
        if bearer is not None and self.username is not None:
            raise SchemaError("schema registry: basic auth (a username) and bearer auth cannot "
                              "be combined")
        https = [b.startswith("https://") for b in bases]
        if tls is not None and not all(https):
            raise SchemaError("schema registry: TLS settings need https:// URLs")
        if tls is None and any(https):
            tls = RegistryTls()
        retries = retries or RegistryRetries()
        self._conf: dict[str, Any] = {
            "url": self.url, "timeout": timeout_s, "max.retries": retries.max_retries,
            "retries.wait.ms": retries.backoff_ms, "retries.max.wait.ms": retries.backoff_max_ms}
        if self.username is not None:
            self._conf["basic.auth.user.info"] = f"{self.username}:{password or ''}"
        self._conf |= (tls.conf() if tls else {}) | (bearer.conf() if bearer else {})
        self._lib = _library()
        try:
            self._client = self._lib.client(dict(self._conf))
        except (ValueError, TypeError, OSError) as exc:  # bad settings, TLS files that don't load
            failure = SchemaError(f"schema registry {self.url}: {_reason(exc)}")
        else:
            failure = None
        if failure is not None:
            raise failure  # outside the handler: the library's exception is not chained to it
        self._by_id: dict[int, AvroSchema] = {}
        self._ids: dict[tuple[str, str], int] = {}
        self._failed: dict[int, tuple[float, str, int | None]] = {}  # id -> until, message, status

    def client_conf(self) -> dict[str, Any]:
        """The SchemaRegistryClient configuration (it holds the secrets: never print it)."""
        return dict(self._conf)

    def __repr__(self) -> str:
        auth = ""
        if self.username is not None:
            auth = f", username={self.username!r}, password={'***' if self._has_password else None}"
        elif self.bearer is not None:
            auth = ", bearer=***" if self.bearer.token else f", oauth={self.bearer.client_id!r}"
        return f"SchemaRegistry({self.url!r}{auth})"

    def schema_by_id(self, schema_id: int) -> AvroSchema:
        """The Avro writer schema registered under `schema_id`, parsed (SchemaError if it is
        not valid Avro)."""
        cached = self._by_id.get(schema_id)
        if cached is not None:
            return cached
        failed = self._failed.get(schema_id)
        if failed is not None and time.monotonic() < failed[0]:
            raise RegistryError(failed[1], status=failed[2])
        try:
            schema = self._writer_schema(schema_id)
        except RegistryError as exc:
            if not exc.transient:  # an id the registry does not have or we cannot use
                if len(self._failed) >= _FAILED_MAX:
                    self._failed.clear()
                self._failed[schema_id] = (time.monotonic() + _FAILED_TTL_S, str(exc), exc.status)
            raise
        self._by_id[schema_id] = schema
        return schema

    def _writer_schema(self, schema_id: int) -> AvroSchema:
        path = f"/schemas/ids/{schema_id}"
        schema = self._call("GET", path, self._client.get_schema, schema_id)
        document = self._avro_document(schema, f"schema {schema_id}", path)
        named: dict[str, Any] = {}
        self._resolve_references(schema, f"schema {schema_id}", named, set())
        return parse_avro_schema(document, f"registry schema id {schema_id}", named)

    def _resolve_references(self, schema: Any, label: str, named: dict[str, Any],
                            seen: set[tuple[str, int]]) -> None:
        """Parse the schemas `schema` references into `named`, theirs first (depth first). A
        reference the registry does not give makes the referencing schema unusable (status
        200: the registry answered), not unknown."""
        for ref in schema.references or ():
            if (ref.subject, ref.version) in seen:
                continue
            seen.add((ref.subject, ref.version))
            target = f"schema {ref.subject} version {ref.version}"
            path = f"/subjects/{urllib.parse.quote(str(ref.subject), safe='')}/versions/{ref.version}"
            try:
                if not isinstance(ref.subject, str) or not isinstance(ref.version, int):
                    raise RegistryError(f"{self._where('GET', path)}: malformed reference",
                                        status=200)
                registered = self._call("GET", path, self._client.get_version, ref.subject,
                                        ref.version)
            except RegistryError as exc:
                if exc.transient:
                    raise
                failure = RegistryError(f"{label} references {ref.name!r} ({target}): {exc}",
                                        status=200)
            else:
                failure = None
            if failure is not None:
                raise failure
            self._resolve_references(registered.schema, target, named, seen)
            parse_avro_schema(self._avro_document(registered.schema, target, path),
                              f"registry {target}", named)

    def _avro_document(self, schema: Any, label: str, path: str) -> Any:
        """The JSON of a fetched schema, which must be Avro."""
        schema_type = schema.schema_type or "AVRO"
        if schema_type != "AVRO":
            raise RegistryError(f"{label} is a {schema_type} schema, not Avro", status=200)
        try:
            if not isinstance(schema.schema_str, str):
                raise ValueError("no 'schema' string")
            return json.loads(schema.schema_str)
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
        parsed = parse_avro_schema(schema, f"schema for subject {subject!r}")
        path = f"/subjects/{urllib.parse.quote(subject, safe='')}/versions"
        schema_id = self._call("POST", path, self._client.register_schema, subject,
                               self._lib.avro_text(text))
        if not isinstance(schema_id, int):
            raise RegistryError(f"{self._where('POST', path)}: response has no integer 'id'",
                                status=200)
        self._ids[key] = schema_id
        self._by_id.setdefault(schema_id, parsed)
        return schema_id

    def _where(self, method: str, path: str) -> str:
        return f"schema registry {self.url}: {method} {path}"

    def _call(self, method: str, path: str, request: Callable[..., T], *args: Any) -> T:
        """One library call; its failures as RegistryErrors, raised outside the handler so that
        the library's exception (which may hold request details) is not chained to them."""
        where = self._where(method, path)
        try:
            return request(*args)
        except self._lib.error as exc:
            failure = _status_error(where, exc)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:  # a 2xx that is no API JSON
            failure = RegistryError(f"{where}: malformed response ({_reason(exc)})", status=200)
        except Exception as exc:  # no answer: refused, timed out, TLS failed, no OAuth token
            failure = RegistryError(f"{where}: unreachable ({_reason(exc)})")
        raise failure


def _status_error(where: str, exc: Any) -> RegistryError:
    """Confluent errors carry {"error_code": 40403, "message": "Schema 7 not found"}; the library
    reports a body without them as error code -1."""
    status: int = exc.http_status_code
    unknown = exc.error_code == -1  # the body was no Confluent error: its text is not shown
    code = exc.error_code if isinstance(exc.error_code, int) and not unknown else None
    detail = None if unknown else exc.error_message
    if not detail:
        try:
            detail = http.HTTPStatus(status).phrase
        except ValueError:
            detail = "error"
    suffix = f", error {code}" if code is not None else ""
    return RegistryError(f"{where}: HTTP {status} ({detail}{suffix})", status=status, error_code=code)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text[:200] if text else type(exc).__name__
