"""Worker configuration: defaults < config file (YAML) < PROCESSOR_* environment < CLI flags.

Secrets (`SecretStr` settings, password-like librdkafka properties) stay readable here because
the clients need them; `masked()` and processor/secrets.py keep them out of everything printed.
"""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    ByteSize,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from processor import secrets
from processor.errors import SpecError, SpecErrors
from processor.runtime.config_files import (
    attributed_errors,
    env_names,
    env_settings,
    read_config_file,
)
from processor.serde.registry import RegistryBearer, RegistryRetries, RegistryTls, SchemaRegistry
from processor.state.memory import MIN_BUDGET
from processor.timeutil import parse_duration_ms

SECURITY_PROPERTIES = {
    "security_protocol": "security.protocol",
    "sasl_mechanism": "sasl.mechanism",
    "sasl_username": "sasl.username",
    "sasl_password": "sasl.password",
    "ssl_ca_location": "ssl.ca.location",
    "ssl_certificate_location": "ssl.certificate.location",
    "ssl_key_location": "ssl.key.location",
    "ssl_key_password": "ssl.key.password",
}
"""Settings that are librdkafka properties of every client, by their librdkafka name."""
MANAGED_PROPERTIES = {
    "bootstrap.servers": "set bootstrap_servers instead",
    "group.id": "the consumer group is the topology name",
    "transactional.id": "derived from the topology name and worker id",
}
"""Properties `kafka:` must not set: the processor sets them itself on every client."""


def _as_text(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if isinstance(value, int | float) else value


class WorkerConfig(BaseSettings):
    """Settings of one worker process. Durations accept '100ms', '5s', ... or milliseconds."""

    model_config = SettingsConfigDict(env_prefix="PROCESSOR_", extra="forbid")

    bootstrap_servers: str = Field(
        default="127.0.0.1:9092",
        validation_alias=AliasChoices("PROCESSOR_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS",
                                      "bootstrap_servers"),
    )
    processing_guarantee: Literal["exactly_once", "at_least_once"] = "exactly_once"
    commit_interval_ms: int = Field(default=100, ge=10)
    state_dir: Path = Path("state")
    worker_id: str | None = None
    batch_size: int = Field(default=10_000, ge=1)
    poll_timeout_ms: int = Field(default=100, ge=0)
    memory_budget: ByteSize | None = Field(
        default=ByteSize(512 * 1024**2), ge=MIN_BUDGET,
        description="bytes of state memory (RocksDB caches, memtables, write caches): '512MiB'")
    cache_max_entries: int | None = Field(default=None, ge=0,
                                          description="an entry cap per write cache, besides the budget")
    restore_batch_size: int = Field(default=50_000, ge=1)
    # global tables and broadcast sources are read to their end before processing starts
    table_bootstrap_timeout_ms: int = Field(default=600_000, ge=1)
    source_topic_wait_ms: int = Field(default=30_000, ge=0)  # for missing source topics
    group_protocol: Literal["consumer", "classic"] = Field(
        default="consumer",
        description="consumer: KIP-848 (Apache Kafka >= 4.0), incremental and co-partitioned "
                    "(range) assignment by the broker; classic: cooperative-sticky, for brokers "
                    "without KIP-848 (older Kafka, Tansu)")
    # classic protocol only: under `consumer` the broker's group.consumer.session.timeout.ms rules
    session_timeout_ms: int = Field(default=45_000, ge=1000)
    max_poll_interval_ms: int = Field(default=300_000, ge=1000)
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    create_topics: bool = True
    create_source_topics: bool = Field(
        default=False, description="create a missing source topic that declares `partitions:`")
    replication_factor: int = Field(default=-1, description="-1 = broker default")
    metrics_port: int | None = Field(default=None, ge=0, le=65535,
                                     description="the HTTP port: /metrics /healthz /readyz /state")
    advertised_url: str | None = Field(
        default=None, description="how other workers reach this one's HTTP port "
                                  "(default http://<hostname>:<metrics_port>)")
    remote_stop_token: SecretStr | None = Field(
        default=None, description="POST /stop on the HTTP port, with this token as its bearer, "
                                  "stops the worker as SIGTERM does (`savepoint create "
                                  "--stop-workers`); unset: the route answers 403")
    liveness_timeout_ms: int = Field(default=60_000, ge=1000,
                                     description="/healthz fails when the loop stalls this long")
    log_level: str = "INFO"
    log_format: Literal["auto", "json", "text"] = Field(
        default="auto", description="auto: text when stderr is a terminal, JSON otherwise")
    consumer: dict[str, Any] = Field(default_factory=dict, description="librdkafka overrides")
    producer: dict[str, Any] = Field(default_factory=dict, description="librdkafka overrides")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] | None = None
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI",
                            "OAUTHBEARER"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    ssl_key_password: SecretStr | None = None
    # declared after the security settings: its validator compares against them
    kafka: dict[str, str] = Field(
        default_factory=dict,
        description="librdkafka properties of every client (consumers, producer, admin)")
    schema_registry_url: str | None = Field(
        default=None, description="http(s)://host:port; a comma-separated list fails over")
    schema_registry_username: str | None = None
    schema_registry_password: SecretStr | None = None
    # declared in this order: each validator below compares against the settings before it
    # (every validator runs, defaults too: pydantic-settings validates defaults)
    schema_registry_ssl_ca_location: str | None = Field(
        default=None, description="CA file or directory verifying the registry's certificate "
                                  "(default: the system's trust store)")
    schema_registry_ssl_certificate_location: str | None = Field(
        default=None, description="client certificate (PEM) for mutual TLS")
    schema_registry_ssl_key_location: str | None = None
    schema_registry_ssl_key_password: SecretStr | None = None
    schema_registry_bearer_token: SecretStr | None = Field(
        default=None, description="a static bearer token (instead of basic auth)")
    schema_registry_oauth_client_id: str | None = None
    schema_registry_oauth_client_secret: SecretStr | None = None
    schema_registry_oauth_scope: str | None = None
    schema_registry_oauth_issuer_endpoint_url: str | None = Field(
        default=None,
        description="OAuth client credentials: tokens for the registry come from this endpoint")
    schema_registry_logical_cluster: str | None = Field(
        default=None, description="Confluent Cloud's registry id (lsrc-...), for bearer auth")
    schema_registry_identity_pool_id: str | None = None
    schema_registry_timeout_ms: int = Field(default=10_000, ge=1)
    schema_registry_max_retries: int = Field(
        default=0, ge=0, description="retries of a request without answer or with HTTP "
                                     "408/429/5xx; 0: the worker stops and its restart retries")
    schema_registry_retry_backoff_ms: int = Field(default=1000, ge=0)
    schema_registry_retry_backoff_max_ms: int = Field(default=20_000, ge=0)
    changelog_topic_configs: dict[str, str] = Field(
        default_factory=dict,
        description="topic configs of the changelog topics the worker creates, over its "
                    "defaults (compact, min.compaction.lag.ms 0, segment.bytes 64 MiB)")
    repartition_purge_interval_ms: int = Field(
        default=30_000, ge=0,
        description="how often committed repartition records are deleted (DeleteRecords)")

    @field_validator("commit_interval_ms", "poll_timeout_ms", "session_timeout_ms",
                     "max_poll_interval_ms", "liveness_timeout_ms",
                     "repartition_purge_interval_ms", "schema_registry_timeout_ms",
                     "schema_registry_retry_backoff_ms", "schema_registry_retry_backoff_max_ms",
                     mode="before")
    @classmethod
    def _duration(cls, v: Any) -> Any:
        return parse_duration_ms(v) if isinstance(v, str) else v

    @field_validator("security_protocol", "sasl_mechanism", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v  # librdkafka ignores the case

    @field_validator("kafka", "changelog_topic_configs", mode="before")
    @classmethod
    def _scalars_as_text(cls, v: Any) -> Any:
        """YAML reads `linger.ms: 5` as a number; librdkafka and topic configs take text."""
        if not isinstance(v, dict):
            return v
        return {k: _as_text(x) for k, x in v.items()}

    @field_validator("changelog_topic_configs")
    @classmethod
    def _changelogs_stay_compacted(cls, v: dict[str, str]) -> dict[str, str]:
        """A changelog that deletes old segments would lose state on the next restore."""
        if "compact" not in v.get("cleanup.policy", "compact").split(","):
            raise ValueError("cleanup.policy of a changelog must include compact")
        return v

    @field_validator("kafka")
    @classmethod
    def _no_double_settings(cls, v: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        # messages name properties, never their values: these may be secrets
        for prop, why in MANAGED_PROPERTIES.items():
            if prop in v:
                raise ValueError(f"{prop} cannot be set here ({why})")
        for name, prop in SECURITY_PROPERTIES.items():
            if prop in v and info.data.get(name) is not None:
                raise ValueError(f"{prop} is also set as {name}; set it in one place")
        return v

    @field_validator("schema_registry_ssl_ca_location", "schema_registry_ssl_certificate_location",
                     "schema_registry_ssl_key_location", "schema_registry_ssl_key_password")
    @classmethod
    def _registry_tls(cls, v: Any, info: ValidationInfo) -> Any:
        if v is None:
            return v
        url = info.data.get("schema_registry_url")
        if url and not all(u.strip().lower().startswith("https://") for u in url.split(",")):
            raise ValueError("TLS settings need an https:// schema_registry_url")
        if info.field_name in ("schema_registry_ssl_key_location", "schema_registry_ssl_key_password") \
                and not info.data.get("schema_registry_ssl_certificate_location"):
            raise ValueError("a client key needs schema_registry_ssl_certificate_location too")
        return v

    @field_validator("schema_registry_bearer_token")
    @classmethod
    def _registry_bearer(cls, v: Any, info: ValidationInfo) -> Any:
        if v is not None and _registry_basic_auth(info.data):
            raise ValueError("bearer auth and basic auth (schema_registry_username/password or "
                             "credentials in schema_registry_url) exclude each other; set one")
        return v

    @field_validator("schema_registry_oauth_issuer_endpoint_url")
    @classmethod
    def _registry_oauth(cls, v: str | None, info: ValidationInfo) -> str | None:
        """The OAuth settings go together, and replace both other kinds of auth."""
        given = {name: info.data.get(name) for name in ("schema_registry_oauth_client_id",
                                                       "schema_registry_oauth_client_secret")}
        given["schema_registry_oauth_issuer_endpoint_url"] = v
        if not any(given.values()) and not info.data.get("schema_registry_oauth_scope"):
            return v
        missing = [name for name, value in given.items() if not value]
        if missing:
            raise ValueError(f"OAuth for the schema registry also needs {', '.join(missing)}")
        if not (v or "").lower().startswith(("http://", "https://")):
            raise ValueError("must be an http(s):// URL")
        if info.data.get("schema_registry_bearer_token") is not None:
            raise ValueError("OAuth and schema_registry_bearer_token exclude each other; set one")
        if _registry_basic_auth(info.data):
            raise ValueError("OAuth and basic auth (schema_registry_username/password or "
                             "credentials in schema_registry_url) exclude each other; set one")
        return v

    @field_validator("schema_registry_logical_cluster", "schema_registry_identity_pool_id")
    @classmethod
    def _registry_bearer_only(cls, v: Any, info: ValidationInfo) -> Any:
        if v is not None and info.data.get("schema_registry_bearer_token") is None and \
                not info.data.get("schema_registry_oauth_issuer_endpoint_url"):
            raise ValueError("only used with bearer auth (schema_registry_bearer_token or the "
                             "schema_registry_oauth_* settings)")
        return v

    def schema_registry(self) -> SchemaRegistry | None:
        """A client of the configured schema registry; None without schema_registry_url."""
        if not self.schema_registry_url:
            return None
        tls = RegistryTls(self.schema_registry_ssl_ca_location,
                          self.schema_registry_ssl_certificate_location,
                          self.schema_registry_ssl_key_location,
                          _revealed(self.schema_registry_ssl_key_password))
        bearer = None
        if self.schema_registry_bearer_token or self.schema_registry_oauth_issuer_endpoint_url:
            bearer = RegistryBearer(
                token=_revealed(self.schema_registry_bearer_token),
                client_id=self.schema_registry_oauth_client_id,
                client_secret=_revealed(self.schema_registry_oauth_client_secret),
                issuer_endpoint_url=self.schema_registry_oauth_issuer_endpoint_url,
                scope=self.schema_registry_oauth_scope or "",
                logical_cluster=self.schema_registry_logical_cluster or "",
                identity_pool_id=self.schema_registry_identity_pool_id)
        return SchemaRegistry(
            self.schema_registry_url, username=self.schema_registry_username,
            password=_revealed(self.schema_registry_password),
            timeout_s=self.schema_registry_timeout_ms / 1000,
            tls=tls if tls != RegistryTls() else None, bearer=bearer,
            retries=RegistryRetries(self.schema_registry_max_retries,
                                    self.schema_registry_retry_backoff_ms,
                                    self.schema_registry_retry_backoff_max_ms))

    def client_properties(self) -> dict[str, str]:
        """The librdkafka properties every client gets: security settings, then `kafka:`."""
        props = {}
        for name, prop in SECURITY_PROPERTIES.items():
            value = getattr(self, name)
            if value is not None:
                props[prop] = value.get_secret_value() if isinstance(value, SecretStr) else value
        return props | self.kafka

    def masked(self) -> dict[str, Any]:
        """The effective settings for display (`describe --config`, the startup log line):
        JSON-ready, every secret shown as `***`."""
        return secrets.masked_settings(self)

    @property
    def exactly_once(self) -> bool:
        return self.processing_guarantee == "exactly_once"

    def resolved_worker_id(self) -> str:
        """Stable across restarts of the same worker, distinct for workers sharing a host.

        It names the transactional id: a restarted worker fences its crashed predecessor and
        aborts its open transaction at once instead of after the transaction timeout.
        """
        if self.worker_id:
            return self.worker_id
        seed = f"{socket.gethostname()}:{self.state_dir.resolve()}"
        return f"{socket.gethostname()}-{hashlib.sha1(seed.encode()).hexdigest()[:8]}"


def _revealed(secret: SecretStr | None) -> str | None:
    return secret.get_secret_value() if secret is not None else None


def _registry_basic_auth(settings: dict[str, Any]) -> bool:
    """Whether the registry settings so far ask for basic auth (a URL with `user@`, too)."""
    urls = (settings.get("schema_registry_url") or "").split(",")
    userinfo = any("@" in u.strip().split("//", 1)[-1].split("/", 1)[0] for u in urls)
    return bool(settings.get("schema_registry_username") or settings.get("schema_registry_password")
                or userinfo)


def load_config(path: str | Path | None = None, **overrides: Any) -> WorkerConfig:
    """Build the config and register its secrets for masking; errors name the file, line and
    field (or `env` / `command line`), and never show a secret value."""
    file = str(path) if path else None
    data, lines = read_config_file(path) if path else ({}, {})
    # precedence: file < environment < explicit overrides (CLI flags)
    for name in list(data):
        if any(n in os.environ for n in env_names(name)):
            del data[name]
    cli = {k: v for k, v in overrides.items() if v is not None}
    data.update(cli)
    try:
        config = WorkerConfig(**data)
    except (ValidationError, SettingsError) as exc:
        hidden = secrets.secret_values(data) | secrets.secret_values(env_settings())
        raise SpecErrors([SpecError(secrets.redact(e.message, hidden), file=e.file, line=e.line,
                                    path=e.path)
                          for e in attributed_errors(exc, file, lines, cli)]) from None
    secrets.register(secrets.secret_values(config))
    return config
