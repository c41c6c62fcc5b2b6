"""Error types that reach users; each carries the coordinates needed to act on it."""

from __future__ import annotations


class ProcessorError(Exception):
    """Base class for errors this package raises on purpose."""


class SpecError(ProcessorError):
    """A topology or config file is invalid. Rendered as `file:line: field: message`."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 path: str | None = None) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.path = path
        super().__init__(self.render())

    def render(self) -> str:
        where = self.file or "<topology>"
        if self.line is not None:
            where = f"{where}:{self.line}"
        field = f" {self.path}:" if self.path else ""
        return f"{where}:{field} {self.message}"


class SpecErrors(ProcessorError):
    """Several SpecErrors found in one file: all are reported at once."""

    def __init__(self, errors: list[SpecError]) -> None:
        self.errors = errors
        super().__init__("\n".join(e.render() for e in errors))


class ExpressionError(ProcessorError):
    """An expression is not allowed or does not compile."""


class RecordError(ProcessorError):
    """Processing one record failed; names the record's source coordinates and the step."""

    def __init__(self, message: str, *, topic: str, partition: int, offset: int,
                 step: str) -> None:
        self.topic, self.partition, self.offset, self.step = topic, partition, offset, step
        super().__init__(f"{message} (record {topic}[{partition}]@{offset}, step {step})")
