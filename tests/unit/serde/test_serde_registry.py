"""The schema registry client's connection settings, against the fake registry for real: https
with a private CA, mutual TLS, bearer tokens, OAuth client credentials, retries, failover and
schema references; and the worker settings that configure them (mapping, errors, secrets)."""

from __future__ import annotations

import datetime
import io
import ipaddress
import json
import ssl
import struct
from pathlib import Path
from typing import Any

import fastavro
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from processor import secrets
from processor.errors import SpecErrors
from processor.runtime.config import load_config
from processor.serde import (
    DeserializationError,
    RegistryError,
    RegistryUnavailable,
    SchemaError,
    SchemaRegistry,
    build_serde,
)
from processor.serde.registry import RegistryBearer, RegistryRetries, RegistryTls
from tests.paths import REPO
from tests.unit.serde.registry_server import RegistryServer

SCHEMAS = REPO / "tests" / "fixtures" / "schemas"
V1 = SCHEMAS / "order_v1.avsc"
ORDER = {"id": "o-1", "customer": "c-9", "amount": 12.5, "quantity": 3, "ts": 1_700_000_000_000,
         "status": "PAID", "tags": ["gift", "rush"], "note": None}
TOKEN = "static-token-7Hq"
CLIENT_SECRET = "oauth-client-secret-3Zp"
KEY_PASSWORD = "client-key-pw-8Vw"
SECRETS = (TOKEN, CLIENT_SECRET, KEY_PASSWORD)


# --- a private CA, a server certificate for 127.0.0.1 and a client certificate ------------------

def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(subject: str, key: Any, issuer: x509.Name, issuer_key: Any, *, ca: bool = False,
                 ip: str | None = None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ip:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


class Pki:
    def __init__(self, root: Path) -> None:
        pem = serialization.Encoding.PEM
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _certificate("test registry CA", ca_key, _name("test registry CA"), ca_key, ca=True)
        server_key = ec.generate_private_key(ec.SECP256R1())
        server = _certificate("registry", server_key, ca.subject, ca_key, ip="127.0.0.1")
        client_key = ec.generate_private_key(ec.SECP256R1())
        client = _certificate("worker", client_key, ca.subject, ca_key)
        self.ca = root / "ca.pem"
        self.ca.write_bytes(ca.public_bytes(pem))
        self.server_cert, self.server_key = root / "server.pem", root / "server.key"
        self.server_cert.write_bytes(server.public_bytes(pem))
        self.server_key.write_bytes(server_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        self.client_cert, self.client_key = root / "client.pem", root / "client.key"
        self.client_cert.write_bytes(client.public_bytes(pem))
        self.client_key.write_bytes(client_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(KEY_PASSWORD.encode())))

    def server_context(self, *, require_client_cert: bool = False) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.server_cert, self.server_key)
        if require_client_cert:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(self.ca)
        return context


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(autouse=True)
def isolated(monkeypatch):
    """No developer settings, and an empty registry of secrets for each test."""
    import os
    for name in list(os.environ):
        if name.upper().startswith("PROCESSOR_"):
            monkeypatch.delenv(name)
    monkeypatch.setattr(secrets, "_secrets", frozenset())
    monkeypatch.setattr(secrets, "_registered", ())


def error_texts(exc: BaseException) -> str:
    texts = []
    seen: BaseException | None = exc
    while seen is not None:
        texts += [str(seen), repr(seen), *map(str, seen.args)]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(texts)


def round_trip(registry: SchemaRegistry) -> Any:
    data = build_serde("avro_registry", registry=registry, schema=V1, subject="s").encode(ORDER)
    return build_serde("avro_registry", registry=registry).decode(data)


# --- TLS --------------------------------------------------------------------------------------

def test_https_with_a_private_ca(pki):
    with RegistryServer(tls=pki.server_context()) as server:
        assert server.url.startswith("https://127.0.0.1:")
        registry = SchemaRegistry(server.url, tls=RegistryTls(ca_location=str(pki.ca)))
        assert round_trip(registry) == ORDER
        # without the CA the registry's certificate is not trusted: not the record's fault
        untrusting = SchemaRegistry(server.url)
        with pytest.raises(RegistryUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
            build_serde("avro_registry", registry=untrusting).decode(b"\x00\x00\x00\x00\x01\x00")


def test_mutual_tls_with_an_encrypted_client_key(pki):
    with RegistryServer(tls=pki.server_context(require_client_cert=True)) as server:
        tls = RegistryTls(str(pki.ca), str(pki.client_cert), str(pki.client_key), KEY_PASSWORD)
        assert round_trip(SchemaRegistry(server.url, tls=tls)) == ORDER
        anonymous = SchemaRegistry(server.url, tls=RegistryTls(ca_location=str(pki.ca)))
        with pytest.raises(RegistryError, match="unreachable") as info:
            anonymous.schema_by_id(1)
        assert info.value.transient
        with pytest.raises(SchemaError) as bad:  # the key does not open with a wrong password
            SchemaRegistry(server.url, tls=RegistryTls(str(pki.ca), str(pki.client_cert),
                                                       str(pki.client_key), "wrong"))
        assert "wrong" not in error_texts(bad.value)


def test_tls_settings_errors(pki):
    with pytest.raises(SchemaError, match="TLS settings need https:// URLs"):
        SchemaRegistry("http://127.0.0.1:1", tls=RegistryTls(ca_location=str(pki.ca)))
    with pytest.raises(SchemaError, match="a client key needs its certificate"):
        SchemaRegistry("https://127.0.0.1:1", tls=RegistryTls(key_location=str(pki.client_key)))
    with pytest.raises(SchemaError, match=r"schema registry https://127.0.0.1:1: .*No such file"):
        SchemaRegistry("https://127.0.0.1:1", tls=RegistryTls(ca_location="/nonexistent/ca.pem"))


# --- bearer tokens and OAuth ------------------------------------------------------------------

def test_static_bearer_token(tmp_path):
    with RegistryServer(bearer_token=TOKEN) as server:
        registry = SchemaRegistry(server.url, bearer=RegistryBearer(token=TOKEN,
                                                                    logical_cluster="lsrc-1"))
        assert round_trip(registry) == ORDER
        assert {r.authorization for r in server.requests} == {f"Bearer {TOKEN}"}
        assert {r.headers.get("target-sr-cluster") for r in server.requests} == {"lsrc-1"}
        assert TOKEN not in repr(registry)
        wrong = SchemaRegistry(server.url, bearer=RegistryBearer(token=TOKEN + "x"))
        with pytest.raises(RegistryError) as info:
            wrong.schema_by_id(1)
        assert info.value.status == 401 and info.value.transient
        assert TOKEN not in error_texts(info.value)


def test_oauth_client_credentials():
    with RegistryServer(oauth_client=("worker", CLIENT_SECRET)) as server:
        bearer = RegistryBearer(client_id="worker", client_secret=CLIENT_SECRET,
                                issuer_endpoint_url=f"{server.url}/oauth/token", scope="registry")
        registry = SchemaRegistry(server.url, bearer=bearer)
        assert round_trip(registry) == ORDER
        assert server.count("POST", "/oauth/token") == 1  # the token is kept until it expires
        assert {r.authorization for r in server.requests if r.path != "/oauth/token"} == {
            f"Bearer {server.issued_token}"}
        assert CLIENT_SECRET not in repr(registry)
        refused = SchemaRegistry(server.url, bearer=RegistryBearer(
            client_id="worker", client_secret="nope", issuer_endpoint_url=f"{server.url}/oauth/token"))
        with pytest.raises(RegistryError, match="unreachable") as info:
            refused.schema_by_id(1)
        assert info.value.transient


@pytest.mark.parametrize(("bearer", "message"), [
    (RegistryBearer(), "schema registry OAuth: client_id, client_secret, issuer_endpoint_url missing"),
    (RegistryBearer(token=TOKEN, client_id="x"),
     "schema registry bearer auth: a static token or OAuth client credentials, not both"),
    (RegistryBearer(client_id="x", client_secret=CLIENT_SECRET),
     "schema registry OAuth: issuer_endpoint_url missing"),
])
def test_bearer_settings_errors(bearer, message):
    with pytest.raises(SchemaError) as info:
        SchemaRegistry("http://127.0.0.1:1", bearer=bearer)
    assert str(info.value) == message
    assert not any(s in error_texts(info.value) for s in SECRETS)
    with pytest.raises(SchemaError, match=r"basic auth .* and bearer auth cannot be combined"):
        SchemaRegistry("http://u:p@127.0.0.1:1", bearer=RegistryBearer(token=TOKEN))


# --- retries, failover, references ------------------------------------------------------------

def test_retries_ride_out_an_overloaded_registry():
    with RegistryServer() as server:
        data = build_serde("avro_registry", registry=SchemaRegistry(server.url), schema=V1,
                           subject="s").encode(ORDER)
        patient = SchemaRegistry(server.url, retries=RegistryRetries(2, backoff_ms=1))
        server.fail_next(503, 2)
        assert build_serde("avro_registry", registry=patient).decode(data) == ORDER
        assert server.count("GET", "/schemas/ids/1") == 3
        server.fail_next(503, 3)
        with pytest.raises(RegistryError, match=r"HTTP 503 \(injected failure, error 50300\)"):
            SchemaRegistry(server.url, retries=RegistryRetries(2, backoff_ms=1)).schema_by_id(1)


def test_a_list_of_urls_fails_over():
    with RegistryServer() as down:
        dead = down.url
    with RegistryServer() as server:
        registry = SchemaRegistry(f"{dead},{server.url}/")
        assert registry.url == f"{dead},{server.url}"
        assert round_trip(registry) == ORDER


ADDRESS = {"type": "record", "name": "Address", "namespace": "shop",
           "fields": [{"name": "city", "type": "string"}]}
CUSTOMER = {"type": "record", "name": "Customer", "namespace": "shop",
            "fields": [{"name": "name", "type": "string"}, {"name": "home", "type": "Address"},
                       {"name": "work", "type": ["null", "shop.Address"], "default": None}]}


def test_schema_references_are_resolved_on_decode():
    with RegistryServer() as server:
        server.register("address", json.dumps(ADDRESS))
        refs = [{"name": "shop.Address", "subject": "address", "version": 1}]
        schema_id = server.register("customers-value", json.dumps(CUSTOMER), None, refs)
        named: dict[str, Any] = {}
        fastavro.parse_schema(ADDRESS, named_schemas=named)
        writer = fastavro.parse_schema(CUSTOMER, named_schemas=named)
        value = {"name": "Ada", "home": {"city": "Paris"}, "work": {"city": "Lyon"}}
        fo = io.BytesIO()
        fo.write(struct.pack(">BI", 0, schema_id))
        fastavro.schemaless_writer(fo, writer, value)
        consumer = build_serde("avro_registry", registry=SchemaRegistry(server.url))
        for _ in range(3):
            assert consumer.decode(fo.getvalue()) == value
        assert server.count("GET", "/subjects/address/versions/1") == 1


def test_a_missing_reference_is_a_decode_error_naming_it():
    with RegistryServer() as server:
        refs = [{"name": "shop.Address", "subject": "address", "version": 1}]
        schema_id = server.register("customers-value", json.dumps(CUSTOMER), None, refs)
        consumer = build_serde("avro_registry", registry=SchemaRegistry(server.url))
        for _ in range(3):
            with pytest.raises(DeserializationError) as info:
                consumer.decode(struct.pack(">BI", 0, schema_id) + b"\x00")
            assert not info.value.transient
            assert str(info.value) == (
                f"avro_registry: cannot use schema id {schema_id}: schema {schema_id} references "
                f"'shop.Address' (schema address version 1): schema registry {server.url}: "
                "GET /subjects/address/versions/1: HTTP 404 (Version 1 not found., error 40402)")
        assert server.count("GET", "/subjects/address/versions/1") == 1


# --- worker settings --------------------------------------------------------------------------

def _config(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "worker.yaml"
    path.write_text(text)
    return load_config(path)


def test_worker_settings_map_onto_the_client_configuration(tmp_path, pki):
    cfg = _config(tmp_path, f"""\
schema_registry_url: https://127.0.0.1:8081
schema_registry_ssl_ca_location: {pki.ca}
schema_registry_ssl_certificate_location: {pki.client_cert}
schema_registry_ssl_key_location: {pki.client_key}
schema_registry_ssl_key_password: "{KEY_PASSWORD}"
schema_registry_bearer_token: "{TOKEN}"
schema_registry_logical_cluster: lsrc-42
schema_registry_identity_pool_id: pool-1
schema_registry_timeout_ms: 2500ms
schema_registry_max_retries: 4
schema_registry_retry_backoff_ms: 200ms
schema_registry_retry_backoff_max_ms: 5s
""")
    registry = cfg.schema_registry()
    assert registry.client_conf() == {
        "url": "https://127.0.0.1:8081", "timeout": 2.5, "max.retries": 4,
        "retries.wait.ms": 200, "retries.max.wait.ms": 5000,
        "ssl.ca.location": str(pki.ca), "ssl.certificate.location": str(pki.client_cert),
        "ssl.key.location": str(pki.client_key), "ssl.key.password": KEY_PASSWORD,
        "bearer.auth.credentials.source": "STATIC_TOKEN", "bearer.auth.token": TOKEN,
        "bearer.auth.logical.cluster": "lsrc-42", "bearer.auth.identity.pool.id": "pool-1"}
    masked = json.dumps(cfg.masked())
    assert not any(s in masked for s in SECRETS)
    assert secrets.redact(f"{TOKEN} {KEY_PASSWORD}") == "*** ***"
    assert not any(s in repr(registry) for s in SECRETS)


def test_oauth_and_basic_auth_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("PROCESSOR_SCHEMA_REGISTRY_OAUTH_CLIENT_SECRET", CLIENT_SECRET)
    cfg = _config(tmp_path, """\
schema_registry_url: http://registry:8081
schema_registry_oauth_client_id: worker
schema_registry_oauth_scope: registry.read
schema_registry_oauth_issuer_endpoint_url: https://idp/oauth2/token
""")
    conf = cfg.schema_registry().client_conf()
    assert {k: v for k, v in conf.items() if k.startswith("bearer.")} == {
        "bearer.auth.credentials.source": "OAUTHBEARER", "bearer.auth.client.id": "worker",
        "bearer.auth.client.secret": CLIENT_SECRET, "bearer.auth.scope": "registry.read",
        "bearer.auth.issuer.endpoint.url": "https://idp/oauth2/token",
        "bearer.auth.logical.cluster": ""}
    assert cfg.masked()["schema_registry_oauth_client_secret"] == "***"
    # the existing settings keep their meaning: basic auth, no retries, 10 s timeout
    monkeypatch.delenv("PROCESSOR_SCHEMA_REGISTRY_OAUTH_CLIENT_SECRET")
    cfg = _config(tmp_path, "schema_registry_url: http://registry:8081\n"
                            "schema_registry_username: svc\nschema_registry_password: pw-1\n")
    assert cfg.schema_registry().client_conf() == {
        "url": "http://registry:8081", "timeout": 10.0, "max.retries": 0,
        "retries.wait.ms": 1000, "retries.max.wait.ms": 20000, "basic.auth.user.info": "svc:pw-1"}
    assert _config(tmp_path, "batch_size: 5\n").schema_registry() is None


@pytest.mark.parametrize(("text", "line", "path", "message"), [
    ("schema_registry_url: http://r:8081\nschema_registry_ssl_ca_location: /ca.pem\n", 2,
     "schema_registry_ssl_ca_location", "TLS settings need an https:// schema_registry_url"),
    ("schema_registry_url: https://r:8081\nschema_registry_ssl_key_location: /k.pem\n", 2,
     "schema_registry_ssl_key_location",
     "a client key needs schema_registry_ssl_certificate_location too"),
    (f"schema_registry_url: https://r:8081\nschema_registry_username: svc\n"
     f"schema_registry_bearer_token: {TOKEN}\n", 3, "schema_registry_bearer_token",
     "bearer auth and basic auth (schema_registry_username/password or credentials in "
     "schema_registry_url) exclude each other; set one"),
    (f"schema_registry_url: https://svc:pw@r:8081\nschema_registry_bearer_token: {TOKEN}\n", 2,
     "schema_registry_bearer_token", "bearer auth and basic auth"),
    (f"schema_registry_oauth_client_id: w\nschema_registry_oauth_client_secret: {CLIENT_SECRET}\n",
     None, "schema_registry_oauth_issuer_endpoint_url",
     "OAuth for the schema registry also needs schema_registry_oauth_issuer_endpoint_url"),
    ("schema_registry_oauth_issuer_endpoint_url: https://idp/token\n", 1,
     "schema_registry_oauth_issuer_endpoint_url", "OAuth for the schema registry also needs "
     "schema_registry_oauth_client_id, schema_registry_oauth_client_secret"),
    (f"schema_registry_bearer_token: {TOKEN}\nschema_registry_oauth_client_id: w\n"
     f"schema_registry_oauth_client_secret: {CLIENT_SECRET}\n"
     "schema_registry_oauth_issuer_endpoint_url: https://idp/token\n", 4,
     "schema_registry_oauth_issuer_endpoint_url",
     "OAuth and schema_registry_bearer_token exclude each other; set one"),
    (f"schema_registry_oauth_client_id: w\nschema_registry_oauth_client_secret: {CLIENT_SECRET}\n"
     "schema_registry_oauth_issuer_endpoint_url: idp/token\n", 3,
     "schema_registry_oauth_issuer_endpoint_url", "must be an http(s):// URL"),
    ("schema_registry_logical_cluster: lsrc-1\n", 1, "schema_registry_logical_cluster",
     "only used with bearer auth"),
    ("schema_registry_max_retries: -1\n", 1, "schema_registry_max_retries", "greater than or equal"),
    ("schema_registry_timeout_ms: soon\n", 1, "schema_registry_timeout_ms", "not a duration"),
])
def test_registry_setting_errors_name_the_setting_and_no_secret(tmp_path, text, line, path, message):
    config = tmp_path / "worker.yaml"
    config.write_text(text)
    with pytest.raises(SpecErrors) as info:
        load_config(config)
    (err,) = info.value.errors
    assert (err.file, err.line, err.path) == (str(config), line, path)
    assert message in err.message
    assert not any(s in str(info.value) for s in SECRETS)
