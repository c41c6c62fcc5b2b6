"""A task's stores against the state layout they were written with: refuse, or record.

Each store records its layout (graph/layout.py) in its local metadata and, as a layout record,
in its changelog (state/changelog.py); a restore brings the changelog's back. Once a task's
stores are restored, each recorded layout is compared with the topology's (graph/compat.py):
none recorded (state from before layouts) or an equal one runs; a compatible difference runs
and the new layout is recorded at the next checkpoint; anything else stops the worker with
`StateLayoutMismatch` (exit 2, one `error:` line with the reasons `upgrade-check` gives) before
the task reads a record — the operator would misread the state.
"""

from __future__ import annotations

from collections.abc import Mapping

from processor.errors import ProcessorError
from processor.graph.compat import Reason, Verdict, advice, store_reasons
from processor.graph.layout import StoreLayout
from processor.state import RocksStore
from processor.state.store import META_LAYOUT


class StateLayoutMismatch(ProcessorError):
    """A store's state was written by a topology whose layout this one cannot read."""

    def __init__(self, store: str, partition: int, reasons: list[Reason]) -> None:
        self.store, self.partition, self.reasons = store, partition, reasons
        verdict = max(r.verdict for r in reasons)
        super().__init__(
            f"state of store {store} (partition {partition}) was written with another layout: "
            f"{verdict}: " + "; ".join(r.render() for r in reasons if r.verdict > Verdict.COMPATIBLE)
            + f" (`processor upgrade-check OLD.yaml NEW.yaml` says the same). {advice(verdict)}")


def _recorded(raw: bytes, current: StoreLayout) -> list[Reason]:
    try:
        old = StoreLayout.from_json(raw)
    except (ValueError, KeyError):
        return [Reason(Verdict.INCOMPATIBLE, f"store {current.store}",
                       "its recorded layout is unreadable")]
    return store_reasons(old, current)


class StoreLayouts:
    """The topology's layout of each store of one task, as recorded bytes."""

    def __init__(self, layouts: Mapping[str, StoreLayout], partition: int) -> None:
        self.layouts = dict(layouts)
        self.encoded = {name: layout.to_json() for name, layout in layouts.items()}
        self.partition = partition
        self._recorded: set[str] = set()

    def check(self, stores: Mapping[str, RocksStore]) -> None:
        """Raise StateLayoutMismatch for the first store whose state this topology would
        misread; compatible differences pass (recorded at the next checkpoint)."""
        for name, store in stores.items():
            raw, current = store.layout, self.layouts.get(name)
            if raw is None or current is None or raw == self.encoded[name]:
                continue
            reasons = _recorded(raw, current)
            if any(r.verdict > Verdict.COMPATIBLE for r in reasons):
                raise StateLayoutMismatch(name, self.partition, reasons)

    def to_record(self, name: str, store: RocksStore) -> bytes | None:
        """The layout to write to the store's changelog and metadata at this checkpoint: the
        topology's, unless the store already holds it."""
        encoded = self.encoded.get(name)
        if encoded is None or name in self._recorded:
            return None
        if store.layout == encoded:  # only this task writes it: no need to read it again
            self._recorded.add(name)
            return None
        return encoded

    def meta(self, name: str, store: RocksStore) -> dict[str, int | bytes]:
        """The layout metadata to write with the store's checkpoint (empty when recorded)."""
        encoded = self.to_record(name, store)
        return {} if encoded is None else {META_LAYOUT: encoded}
