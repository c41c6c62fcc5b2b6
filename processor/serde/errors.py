"""Serde errors. Each message names the format and, where it helps, the byte or field that failed,
so a dead-letter entry or a log line is actionable without the original bytes.

    SerdeError (ProcessorError)
    ├── DeserializationError        bytes from a topic could not be turned into a value
    │   └── RegistryUnavailable     ...because the schema registry is not usable now (transient)
    ├── SerializationError          a value could not be turned into bytes
    │   └── RegistryUnavailableOnEncode   ...because the registry is not usable now (transient)
    ├── RegistryError               the schema registry client itself failed (has `status`)
    └── SchemaError (also ValueError)  a schema file or serde option is wrong: raised at build time

`transient` is True only where retrying the same record later can succeed, so the runtime can
tell "stop and retry" (registry down, overloaded, or refusing our credentials) from "dead-letter
this record" (corrupt bytes, an unknown schema id, a value that does not fit).
SchemaError is also a ValueError so that it surfaces as an ordinary validation error when raised
inside a pydantic validator at topology-validate time.
"""

from __future__ import annotations

from processor.errors import ProcessorError


class SerdeError(ProcessorError):
    """Base of every error raised by a serde or by the schema registry client."""

    transient: bool = False


class DeserializationError(SerdeError):
    """A record's bytes do not decode in the configured format (permanent for that record)."""


class SerializationError(SerdeError):
    """A value does not encode in the configured format (permanent for that value)."""


class RegistryUnavailable(DeserializationError):
    """Decoding needed the schema registry, which is not usable now: down, timeout, HTTP 5xx or
    429, or credentials refused (401/403)."""

    transient = True


class RegistryUnavailableOnEncode(SerializationError):
    """Encoding needed the schema registry, which is not usable now (as RegistryUnavailable)."""

    transient = True


class SchemaError(SerdeError, ValueError):
    """A schema file cannot be read or is invalid, or serde options do not fit the format."""


class RegistryError(SerdeError):
    """A schema registry request failed. `status` is the HTTP status, or None if none came back."""

    def __init__(self, message: str, *, status: int | None = None,
                 error_code: int | None = None) -> None:
        self.status = status
        self.error_code = error_code
        super().__init__(message)

    @property
    def transient(self) -> bool:  # type: ignore[override]
        """No answer, a server error, throttling or refused credentials: the registry is not
        usable right now, through no fault of the record, so retry rather than dead-letter."""
        return self.status is None or self.status >= 500 or self.status in (401, 403, 429)
