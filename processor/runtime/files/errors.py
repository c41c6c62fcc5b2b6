"""Errors of file inputs and outputs; each names the file (and the line, row or column)."""

from __future__ import annotations

from processor.errors import ProcessorError


class FileInputError(ProcessorError):
    """An input path matches no file, or a file cannot be read."""


class FileOutputError(ProcessorError):
    """A sink file cannot be written, or a row does not fit the file's columns."""
