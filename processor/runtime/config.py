"""Worker configuration: defaults < config file (YAML) < PROCESSOR_* environment < CLI flags."""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from processor.errors import SpecError, SpecErrors
from processor.timeutil import parse_duration_ms


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
    session_timeout_ms: int = Field(default=45_000, ge=1000)
    max_poll_interval_ms: int = Field(default=300_000, ge=1000)
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    create_topics: bool = True
    replication_factor: int = Field(default=-1, description="-1 = broker default")
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"
    consumer: dict[str, Any] = Field(default_factory=dict, description="librdkafka overrides")
    producer: dict[str, Any] = Field(default_factory=dict, description="librdkafka overrides")

    @field_validator("commit_interval_ms", "poll_timeout_ms", "session_timeout_ms",
                     "max_poll_interval_ms", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> Any:
        return parse_duration_ms(v) if isinstance(v, str) else v

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


def load_config(path: str | Path | None = None, **overrides: Any) -> WorkerConfig:
    """Build the config; errors name the file, line and field."""
    data: dict[str, Any] = {}
    file = str(path) if path else None
    lines: dict[str, int] = {}
    if path:
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
        if isinstance(node, yaml.MappingNode):
            lines = {k.value: k.start_mark.line + 1 for k, _ in node.value}
    # precedence: file < environment < explicit overrides (CLI flags)
    for name in list(data):
        env_names = [f"PROCESSOR_{name.upper()}"]
        if name == "bootstrap_servers":
            env_names.append("KAFKA_BOOTSTRAP_SERVERS")
        if any(n in os.environ for n in env_names):
            del data[name]
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return WorkerConfig(**data)
    except ValidationError as exc:
        errors = []
        for err in exc.errors(include_url=False):
            field = ".".join(str(p) for p in err["loc"])
            top = str(err["loc"][0]) if err["loc"] else ""
            where = file if top in lines or not os.environ.get(f"PROCESSOR_{top.upper()}") else "env"
            msg = "unknown setting" if err["type"] == "extra_forbidden" else err["msg"]
            errors.append(SpecError(msg.removeprefix("Value error, "), file=where,
                                    line=lines.get(top), path=field))
        raise SpecErrors(errors) from None
