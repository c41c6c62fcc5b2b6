"""Crash injection for the crash tests: `PROCESSOR_CRASH_AT=<point>:<n>` kills the process
with SIGKILL the n-th time execution reaches `<point>` (no cleanup, exactly like kill -9).

Points: batch.processed, checkpoint.after_flush, checkpoint.after_changelog,
checkpoint.before_commit, checkpoint.after_commit, restore.chunk.
Unset (the normal case), `point()` is a dict lookup that finds nothing.
"""

from __future__ import annotations

import os
import signal

_TARGETS: dict[str, int] = {}
_spec = os.environ.get("PROCESSOR_CRASH_AT", "")
if _spec:
    _name, _, _count = _spec.partition(":")
    _TARGETS[_name] = int(_count or 1)


def point(name: str) -> None:
    remaining = _TARGETS.get(name)
    if remaining is None:
        return
    if remaining <= 1:
        os.kill(os.getpid(), signal.SIGKILL)
    _TARGETS[name] = remaining - 1
