"""Process functions for failed_logins.yaml: alert on 3 failed logins of a user within 1 minute.

Per user (the record key) the list state `failures` holds the event times of recent failed
logins. A failure drops the times 60 s or more older than the newest one and alerts once 3
remain — then the list is cleared, so one burst alerts once. A successful login (or a
tombstone) clears it too. Each failure (re-)registers an event-time timer at newest + 60 s;
when the watermark gets there and nothing newer arrived, the timer clears the state: users who
go quiet leave nothing behind. With disorder within the source's max_out_of_orderness the
purge is invisible: every failure arriving after it is >= 60 s newer than the purged ones.
"""

from __future__ import annotations

from typing import Any

WINDOW_MS = 60_000
THRESHOLD = 3
ALERT = "3 failed logins within 1 minute"


def on_login(ctx: Any, key: Any, value: Any) -> None:
    failures = ctx.state.list("failures")
    event = None if value is None else value.get("event")
    if event != "login_failed":
        if value is None or event == "login_ok":
            failures.clear()
        return
    times = failures.get()
    times.append(ctx.timestamp)
    newest = max(times)
    times = sorted(t for t in times if t > newest - WINDOW_MS)
    if len(times) >= THRESHOLD:
        ctx.emit({"user": key, "failures": len(times), "first_failure_ts": times[0],
                  "last_failure_ts": times[-1], "alert": ALERT})
        failures.clear()
        return
    failures.set(times)
    ctx.timers.register_event_time(newest + WINDOW_MS)


def on_login_timer(ctx: Any, key: Any, timestamp: int) -> None:
    failures = ctx.state.list("failures")
    times = failures.get()
    if times and max(times) + WINDOW_MS <= timestamp:
        failures.clear()
