"""Fault injection for tests.

`PROCESSOR_CRASH_AT=<point>:<n>` kills the process with SIGKILL the n-th time execution
reaches `<point>` (no cleanup, exactly like kill -9). `PROCESSOR_STALL_AT=<point>:<n>:<seconds>`
blocks the loop there once, for that long (a hung call: liveness and readiness tests).

Points: batch.processed, checkpoint.after_flush, checkpoint.after_changelog,
checkpoint.before_commit, checkpoint.after_commit, restore.chunk, repartition.purged (a
DeleteRecords answer read, runtime/kafka/purge.py), batch_run.before_commit and
batch_run.files_committed (`processor batch`: outputs staged; files renamed, topic
transaction not yet committed), backfill.before_commit (state saved, outputs not committed),
backfill.committed (outputs committed, nothing restored), savepoint.restore.before_offsets
(changelogs written, group offsets not committed).
Unset (the normal case), `point()` is a dict lookup that finds nothing.
"""

from __future__ import annotations

import os
import signal
import time

_TARGETS: dict[str, tuple[str, int, float]] = {}  # point -> (action, countdown, seconds)
for _var, _action in (("PROCESSOR_CRASH_AT", "crash"), ("PROCESSOR_STALL_AT", "stall")):
    _spec = os.environ.get(_var, "")
    if _spec:
        _name, _count, _seconds = ([*_spec.split(":"), "", ""])[:3]
        _TARGETS[_name] = (_action, int(_count or 1), float(_seconds or 0))


def point(name: str) -> None:
    target = _TARGETS.get(name)
    if target is None:
        return
    action, remaining, seconds = target
    if remaining > 1:
        _TARGETS[name] = (action, remaining - 1, seconds)
        return
    del _TARGETS[name]
    if action == "crash":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(seconds)
