"""Global tables and broadcast sources: state every task of the worker reads.

Unlike a per-task table (followed by its task, runtime/task_manager.py), a global table or a
broadcast source holds every partition of its topic on every worker, in a local TableStore.
All are read to the end before the first record is processed (resuming from the stores'
offsets), then followed by the worker's TableFollower (runtime/durability/tables.py) as the loop turns.
A broadcast source is also kept in memory as decoded {key: value} for expressions and process
functions.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from processor.graph import Topology
from processor.graph.model import TableDef
from processor.operators.broadcast import BroadcastState
from processor.runtime.durability.tables import TableFollower
from processor.runtime.kafka.serdes import Serdes
from processor.state.memory import StateMemory
from processor.state.table import TableStore

log = logging.getLogger("processor.worker")  # the worker's log lines, as before the split


class GlobalState:
    def __init__(self, topology: Topology, state_dir: Path, serdes: Serdes,
                 memory: StateMemory | None = None) -> None:
        self.topology = topology
        self.memory = memory
        self.state_dir = state_dir
        self.serdes = serdes
        self.stores: dict[str, TableStore] = {}  # global tables and broadcasts by name
        self.broadcast = BroadcastState()

    def table_for(self, table: TableDef) -> TableStore:
        """The store of a global table (a task's BuildContext.table_for)."""
        return self.stores[table.name]

    def start(self, tables: TableFollower, partitions: dict[str, int],
              bootstrap_timeout_s: float) -> None:
        """Open the stores, register them with `tables` and read them to the end;
        `partitions`: the partition count of each topic."""
        topology = self.topology
        if not topology.global_tables and not topology.broadcasts:
            return
        for t in [*topology.global_tables, *topology.broadcasts]:
            store = self.stores[t.name] = TableStore(
                self.state_dir / topology.name / f"global-{t.name}", self.memory)
            on_update = None
            if t.kind == "broadcast":
                self.broadcast.declare(t.name, self.serdes(t.end, True).decode,
                                       self.serdes(t.end, False).decode)
                self.broadcast.update(t.name, list(store.items()))  # what the last run read
                on_update = functools.partial(self._broadcast_update, t.name)
            tables.add(f"global:{t.name}", t.topic, list(range(partitions[t.topic])), store,
                       on_ready=lambda: None, on_update=on_update)
        topology.broadcast.install(self.broadcast)
        tables.bootstrap(bootstrap_timeout_s)

    def _broadcast_update(self, name: str, pairs: list[tuple[bytes, bytes | None]]) -> None:
        self.broadcast.update(name, pairs)
        log.info("broadcast state updated", extra={
            "source": name, "records": len(pairs), "version": self.broadcast.version[name],
            "keys": len(self.broadcast[name])})

    def close(self) -> None:
        for store in self.stores.values():
            store.close()
