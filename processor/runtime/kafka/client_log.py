"""librdkafka's own log lines, summarised: the first line of each kind, then a count.

Without a `logger`, librdkafka prints every retry to stderr (`%3|...|FAIL|rdkafka#...`): an
unreachable broker gives hundreds of identical lines before the one error that matters. Every
client gets this logger instead (runtime/kafka/clients.py): a line of a new kind goes to the
`processor.kafka` logger; repeats are counted and reported at most once a minute with their
count, so a broker that stays down is still visible in a long-running worker's log. Debug
lines (only there when the user set librdkafka's `debug` property) all go through, at INFO.
"""

from __future__ import annotations

import logging
import re
import threading
import time

log = logging.getLogger("processor.kafka")

REPEAT_EVERY_S = 60.0
# what varies between retries of one failure: timings, states, counters
_VARYING = re.compile(r"\(after \d+ms[^)]*\)|\d+ms")


class ClientLog:
    """A `logger` for librdkafka clients (it calls `log(level, fmt, *args)` while polled)."""

    def __init__(self, repeat_every_s: float = REPEAT_EVERY_S) -> None:
        self.repeat_every_s = repeat_every_s
        self._lock = threading.Lock()
        self._kinds: dict[str, list[float | int]] = {}  # kind -> [last reported, repeats since]

    def log(self, level: int, fmt: str, *args: object) -> None:
        text = fmt % args if args else fmt
        if level <= logging.DEBUG:
            # librdkafka logs at debug level only when the user set its `debug` property: they
            # asked for every line (a config dump, a protocol trace), whatever our log level
            log.info("librdkafka: %s", text)
            return
        kind = _VARYING.sub("", text.split(": ", 1)[-1])
        now = time.monotonic()
        with self._lock:
            seen = self._kinds.get(kind)
            if seen is None:
                self._kinds[kind] = [now, 0]
                repeats = -1
            elif now - seen[0] >= self.repeat_every_s:
                repeats, seen[0], seen[1] = int(seen[1]), now, 0
            else:
                seen[1] += 1
                return
        suffix = f" (and {repeats} more like it)" if repeats > 0 else ""
        log.log(level, "librdkafka: %s%s", text, suffix)

    def repeats(self) -> int:
        """Lines held back since they were last reported."""
        with self._lock:
            return sum(int(n) for _, n in self._kinds.values())


CLIENT_LOG = ClientLog()
