"""Turn a TopologySpec into sub-topologies: the units that run as one task per partition.

Pipelines reading the same source topic share a sub-topology (the batch is decoded once and
fanned out). A key change (`key_by`, `python`) followed by a stateful step ends the
sub-topology with a write to an internal repartition topic keyed by the new key; a new
sub-topology reads it, so all records of one key meet in one task and one store partition.

The walk here visits each pipeline's steps in order and hands each to its factory
(graph/steps/, looked up by spec model); errors are collected with their file:line and raised
together at the end.
"""

from __future__ import annotations

from typing import Any

from processor.errors import SpecErrors
from processor.graph.model import Topology
from processor.graph.scope import Scope, StepAt, Stream
from processor.graph.steps import KINDS
from processor.spec.loader import LoadedSpec, PathT


class _Walk:
    def __init__(self, loaded: LoadedSpec) -> None:
        self.scope = Scope(loaded, self.steps)

    def build(self) -> Topology:
        scope, spec = self.scope, self.scope.spec
        for i, pipeline in enumerate(spec.pipelines):
            ppath: PathT = ("pipelines", i)
            fpath: PathT = (*ppath, "from")
            names = pipeline.sources
            streams = [scope.stream_source(fpath if isinstance(pipeline.from_, str)
                                           else (*fpath, n), name)
                       for n, name in enumerate(names)]
            if all(streams):
                own = pipeline.name or (names[0] if len(names) == 1 else None)
                self.steps((*ppath, "steps"), pipeline.steps, streams, own)  # type: ignore[arg-type]
        tables = [scope.table_def(name) for name, src in spec.sources.items()
                  if src.kind in ("global_table", "broadcast")]
        partitions: dict[str, int] = {}
        for name, src in spec.sources.items():
            if src.partitions is not None and \
                    partitions.setdefault(src.topic, src.partitions) != src.partitions:
                scope.error(("sources", name, "partitions"),
                            f"topic {src.topic!r} is declared with {partitions[src.topic]} "
                            "partitions by another source")
        if scope.errors:
            raise SpecErrors(scope.errors)
        return Topology(spec.name, sorted(scope.subs.values(), key=lambda s: s.id),
                        spec.dlq_topic, spec.dlq.partitions,
                        global_tables=[t for t in tables if t.kind == "global_table"],
                        broadcasts=[t for t in tables if t.kind == "broadcast"],
                        copartitioned=scope.copartitioned, broadcast=scope.broadcast,
                        source_partitions=partitions)

    def steps(self, base: PathT, steps: list[Any], streams: list[Stream], own: str | None) -> None:
        """Place `steps` on every stream (several until a merge meets a step that needs one
        task per key); `own` names these records in join outputs."""
        taken = False
        for j, step in enumerate(steps):
            if taken:  # the aggregate a window step already built
                taken = False
                continue
            kind = KINDS[type(step)]
            at = StepAt((*base, j), step, steps[j + 1] if j + 1 < len(steps) else None, own)
            placed = kind.place(self.scope, at, streams)
            if placed is None:
                return
            streams, taken = placed, kind.takes_following


def build_topology(loaded: LoadedSpec) -> Topology:
    """Compile every expression, resolve references and split into sub-topologies."""
    return _Walk(loaded).build()
