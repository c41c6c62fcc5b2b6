"""Serializers for record keys and values."""

from processor.serde.formats import FORMATS, Serde, serde_for

__all__ = ["FORMATS", "Serde", "serde_for"]
