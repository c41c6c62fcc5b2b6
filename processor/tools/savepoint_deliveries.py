"""Delivery reports of the records a savepoint restore produces: a failure raises at the next
check (the restore stops, naming the partition); the offsets are kept where asked (a
repartition reader's position is the new offset of a re-produced record)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from processor.tools.savepoint_format import SavepointError


class Deliveries:
    """Delivery reports: failures raise at the next check; offsets kept where asked."""

    def __init__(self) -> None:
        self.error: str | None = None
        self.offsets: dict[tuple[str, int], list[int]] = {}

    def tracking(self, topic: str, partition: int) -> Callable[[Any, Any], None]:
        got = self.offsets.setdefault((topic, partition), [])

        def report(err: Any, msg: Any) -> None:
            if err is not None:
                self.error = self.error or f"{topic}[{partition}]: {err.str()}"
            else:
                got.append(msg.offset())
        return report

    def failed(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.error = self.error or f"{msg.topic()}[{msg.partition()}]: {err.str()}"

    def check(self) -> None:
        if self.error:
            raise SavepointError(f"restore failed writing {self.error}; reset the application "
                                 "before restoring again")
