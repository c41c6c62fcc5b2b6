"""Pydantic models of the topology YAML. Field names here are the YAML reference.

The top level is here; sources and sinks are in topics.py, steps in steps.py.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, field_validator, model_validator

from processor.spec.base import OnError, Strict
from processor.spec.steps import Step
from processor.spec.topics import DeadLetterSpec, SinkSpec, SourceSpec

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")


class PipelineSpec(Strict):
    from_: str | list[str] = Field(alias="from")  # several sources: their union (merge)
    name: str | None = None
    steps: list[Step] = Field(min_length=1)

    @field_validator("from_")
    @classmethod
    def _distinct(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and (not v or len(set(v)) != len(v)):
            raise ValueError("`from` lists each source once (and at least one)")
        return v

    @property
    def sources(self) -> list[str]:
        return [self.from_] if isinstance(self.from_, str) else list(self.from_)


class TopologySpec(Strict):
    name: str
    sources: dict[str, SourceSpec] = Field(min_length=1)
    sinks: dict[str, SinkSpec] = Field(default_factory=dict)
    pipelines: list[PipelineSpec] = Field(min_length=1)
    on_error: OnError = "dlq"
    dlq: DeadLetterSpec = DeadLetterSpec()

    @model_validator(mode="before")
    @classmethod
    def _file_topics(cls, data: Any) -> Any:
        """A file source or sink needs no topic: it gets its own name (the topic it would be
        live on, and the name its records carry inside the graph)."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for section in ("sources", "sinks"):
            entries = data.get(section)
            if not isinstance(entries, dict):
                continue
            data[section] = {
                name: ({**entry, "topic": name} if isinstance(entry, dict) and "file" in entry
                       and "topic" not in entry else entry)
                for name, entry in entries.items()}
        return data

    @property
    def dlq_topic(self) -> str:
        return self.dlq.topic or f"{self.name}-dlq"

    @field_validator("name")
    @classmethod
    def _valid_name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(
                "name must start with a letter or digit and contain only letters, digits, "
                "'.', '_' or '-' (it becomes the consumer group id and topic prefix)"
            )
        return v
