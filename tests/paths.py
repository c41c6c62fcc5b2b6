"""The repository root, for tests that read its files (topologies, fixtures, the chart)
whatever directory they sit in."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
