"""Worker configuration: defaults < config file (YAML) < PROCESSOR_* environment < CLI flags.

Secrets (`SecretStr` settings, password-like librdkafka properties) stay readable here because
the clients need them; `masked()` and processor/secrets.py keep them out of everything printed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from processor import secrets
from processor.errors import SpecError, SpecErrors
from processor.timeutil import parse_duration_ms

ENV_PREFIX = "PROCESSOR_"
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
    cache_max_entries: int = Field(default=100_000, ge=0)
    restore_batch_size: int = Field(default=50_000, ge=1)
    # global tables and broadcast sources are read to their end before processing starts
    table_bootstrap_timeout_ms: int = Field(default=600_000, ge=1)
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
    replication_factor: int = Field(default=-1, description="-1 = broker default")
    metrics_port: int | None = Field(default=None, ge=0, le=65535,
                                     description="the HTTP port: /metrics /healthz /readyz /state")
    advertised_url: str | None = Field(
        default=None, description="how other workers reach this one's HTTP port "
                                  "(default http://<hostname>:<metrics_port>)")
    liveness_timeout_ms: int = Field(default=60_000, ge=1000,
                                     description="/healthz fails when the loop stalls this long")
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"
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
    schema_registry_url: str | None = None
    schema_registry_username: str | None = None
    schema_registry_password: SecretStr | None = None
    changelog_topic_configs: dict[str, str] = Field(
        default_factory=dict,
        description="topic configs of the changelog topics the worker creates, over its "
                    "defaults (compact, min.compaction.lag.ms 0, segment.bytes 64 MiB)")
    repartition_purge_interval_ms: int = Field(
        default=30_000, ge=0,
        description="how often committed repartition records are deleted (DeleteRecords)")

    @field_validator("commit_interval_ms", "poll_timeout_ms", "session_timeout_ms",
                     "max_poll_interval_ms", "liveness_timeout_ms",
                     "repartition_purge_interval_ms", mode="before")
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


def _env_names(setting: str) -> list[str]:
    names = [f"{ENV_PREFIX}{setting.upper()}"]
    return [*names, "KAFKA_BOOTSTRAP_SERVERS"] if setting == "bootstrap_servers" else names


def _read_file(path: str | Path) -> tuple[dict[str, Any], dict[str, int]]:
    """The file's settings and the line of each top-level key."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.load(text, Loader=yaml.SafeLoader) or {}
    except OSError as exc:
        raise SpecErrors([SpecError(f"cannot read config: {exc.strerror}", file=file)]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise SpecErrors([SpecError(f"YAML syntax error: {exc.problem}", file=file,
                                    line=mark.line + 1 if mark else None)]) from None
    if not isinstance(data, dict):
        raise SpecErrors([SpecError("config must be a YAML mapping", file=file, line=1)])
    lines = {k.value: k.start_mark.line + 1 for k, _ in node.value} if isinstance(
        node, yaml.MappingNode) else {}
    return data, lines


def _env_settings() -> dict[str, Any]:
    """PROCESSOR_* variables as raw settings (JSON objects decoded), to find their secrets."""
    out: dict[str, Any] = {}
    for name, value in os.environ.items():
        if name.upper().startswith(ENV_PREFIX):
            try:
                decoded = json.loads(value) if value.lstrip().startswith("{") else value
            except ValueError:
                decoded = value
            out[name[len(ENV_PREFIX):].lower()] = decoded
    return out


def load_config(path: str | Path | None = None, **overrides: Any) -> WorkerConfig:
    """Build the config and register its secrets for masking; errors name the file, line and
    field (or `env` / `command line`), and never show a secret value."""
    file = str(path) if path else None
    data, lines = _read_file(path) if path else ({}, {})
    # precedence: file < environment < explicit overrides (CLI flags)
    for name in list(data):
        if any(n in os.environ for n in _env_names(name)):
            del data[name]
    cli = {k: v for k, v in overrides.items() if v is not None}
    data.update(cli)
    try:
        config = WorkerConfig(**data)
    except (ValidationError, SettingsError) as exc:
        hidden = secrets.secret_values(data) | secrets.secret_values(_env_settings())
        raise SpecErrors([SpecError(secrets.redact(e.message, hidden), file=e.file, line=e.line,
                                    path=e.path)
                          for e in _errors(exc, file, lines, cli)]) from None
    secrets.register(secrets.secret_values(config))
    return config


def _errors(exc: ValidationError | SettingsError, file: str | None, lines: dict[str, int],
            cli: dict[str, Any]) -> list[SpecError]:
    """Attribute each error to where its setting came from: flag, environment or file."""
    if isinstance(exc, SettingsError):  # an environment variable that is not valid JSON
        match = re.search(r'field "(\w+)"', str(exc))
        name = match[1] if match else ""
        return [SpecError(f"{ENV_PREFIX}{name.upper()} must be a JSON object", file="env",
                          path=name or None)]
    errors = []
    for err in exc.errors(include_url=False):
        field = ".".join(str(p) for p in err["loc"])
        top = str(err["loc"][0]) if err["loc"] else ""
        if top in cli:
            where, line = "command line", None
        elif any(os.environ.get(n) for n in _env_names(top)):
            where, line = "env", None
        else:
            where, line = file, lines.get(top)
        msg = "unknown setting" if err["type"] == "extra_forbidden" else err["msg"]
        errors.append(SpecError(msg.removeprefix("Value error, "), file=where, line=line,
                                path=field))
    return errors
