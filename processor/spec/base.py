"""What every spec model shares: strict parsing, durations, error policies, function references."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict

from processor.timeutil import parse_duration_ms

REF_PATTERN = r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$"
OnError = Literal["dlq", "skip", "fail"]
"""What happens to a record that fails: dead-letter topic, drop (counted), or stop the worker."""


class Strict(BaseModel):
    """Unknown keys are errors (a typo must not be ignored); models are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _duration(value: Any) -> int:
    if value is None:
        raise ValueError("a duration is required (e.g. '5s')")
    return parse_duration_ms(value)


DurationMs = Annotated[int, BeforeValidator(_duration)]
"""'250ms', '5s', '1m', '2h', '1d', or a number of milliseconds."""
