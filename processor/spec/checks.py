"""Checks that need the whole spec at once: where written topics lead, and store names.

Pydantic validates each section on its own; a topology can still be well-formed piece by piece
and loop forever as a whole (a pipeline writes to a topic a source reads, feeding itself), send
its failed records back to its own input, or give two stores one name (which also names their
changelog and repartition topics). Those are found here, after pydantic succeeded, and
reported like any other spec error: file, line of the offending step, field path.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from processor.errors import SpecError
from processor.spec.steps import (
    AggregateStep,
    BranchCase,
    BranchStep,
    IntervalJoinStep,
    PatternStep,
    ProcessStep,
    ReconcileStep,
    ToStep,
    WindowStep,
)
from processor.spec.topics import SinkSpec

if TYPE_CHECKING:
    from processor.spec.loader import LoadedSpec, PathT


@dataclass(frozen=True)
class _Write:
    """A pipeline step writing to `topic`, reached from the pipeline's source `source_topic`."""

    source_topic: str
    topic: str
    path: PathT
    what: str


def walk_steps(steps: list[Any], base: PathT) -> Iterator[tuple[PathT, Any, Any]]:
    """(path, step, previous step) of every step, the steps of branch cases included."""
    previous = None
    for j, step in enumerate(steps):
        path: PathT = (*base, j)
        yield path, step, previous
        previous = step
        if isinstance(step, BranchStep):
            for c, case in enumerate(step.branch):
                if isinstance(case, BranchCase):
                    yield from walk_steps(case.steps, (*path, "branch", c, "steps"))
                else:
                    yield from walk_steps(case.default, (*path, "branch", c, "default"))


def _writes(loaded: LoadedSpec) -> list[_Write]:
    """Every topic each pipeline writes (`to` steps and windows' late topics), in spec order,
    once per source its records may come from (its own, and the streams a join brings in).

    References that do not resolve (unknown source or sink) are skipped: the graph builder
    reports them with their own message."""
    spec = loaded.spec
    out: list[_Write] = []
    for i, pipeline in enumerate(spec.pipelines):
        topics = [spec.sources[n].topic for n in pipeline.sources if n in spec.sources]
        for path, step, _ in walk_steps(pipeline.steps, ("pipelines", i, "steps")):
            written: list[tuple[str, PathT, str]] = []
            if isinstance(step, ToStep):
                sink = spec.sinks.get(step.to) if isinstance(step.to, str) else step.to
                if sink is not None:
                    written.append((sink.topic, (*path, "to"), "writes to"))
            elif isinstance(step, WindowStep) and isinstance(step.window.late, SinkSpec):
                written.append((step.window.late.topic, (*path, "window", "late"),
                                "sends late records to"))
            elif isinstance(step, PatternStep):
                for what, end in (("late", step.pattern.late), ("timeouts", step.pattern.timeouts)):
                    if isinstance(end, SinkSpec):
                        written.append((end.topic, (*path, "pattern", what), f"sends {what} to"))
            elif isinstance(step, IntervalJoinStep | ReconcileStep):
                others = ([step.interval_join.with_] if isinstance(step, IntervalJoinStep)
                          else step.reconcile.with_)
                topics = [*topics, *(spec.sources[n].topic for n in others if n in spec.sources)]
            out.extend(_Write(t, topic, where, what) for t in topics for topic, where, what in written)
    return out


def _cycles(loaded: LoadedSpec) -> list[SpecError]:
    """Depth-first search over topics; each back edge is a write that closes a cycle."""
    edges: dict[str, list[_Write]] = defaultdict(list)
    for write in _writes(loaded):
        edges[write.source_topic].append(write)
    readers: dict[str, str] = {}
    for name, source in loaded.spec.sources.items():
        readers.setdefault(source.topic, name)
    errors: list[SpecError] = []
    done: set[str] = set()
    stack: list[str] = []

    def visit(topic: str) -> None:
        stack.append(topic)
        for write in edges.get(topic, []):
            if write.topic in stack:
                loop = [*stack[stack.index(write.topic):], write.topic]
                errors.append(loaded.error(write.path, (
                    f"cycle: {' -> '.join(loop)} (this step {write.what} topic {write.topic!r}, "
                    f"which source {readers[write.topic]!r} reads: records would loop forever)")))
            elif write.topic not in done:
                visit(write.topic)
        stack.pop()
        done.add(topic)

    for topic in readers:
        if topic not in done:
            visit(topic)
    return errors


def _uses_dead_letters(loaded: LoadedSpec) -> bool:
    spec = loaded.spec
    return spec.on_error == "dlq" or any(s.on_error == "dlq" for s in spec.sources.values()) or any(
        step.on_error == "dlq" for p in spec.pipelines for _, step, _ in walk_steps(p.steps, ()))


def _dead_letters_read_back(loaded: LoadedSpec) -> list[SpecError]:
    """Failed records must not land on an input topic: they would fail again, forever."""
    spec = loaded.spec
    if not _uses_dead_letters(loaded):
        return []
    for name, source in spec.sources.items():
        if source.topic == spec.dlq_topic:
            path: PathT = ("dlq", "topic") if spec.dlq.topic else ("sources", name, "topic")
            return [loaded.error(path, (
                f"dead-letter topic {spec.dlq_topic!r} is read by source {name!r}: failed "
                "records would be processed (and fail) again; use a topic no source reads"))]
    return []


def _store_key(step: Any, previous: Any) -> tuple[str, tuple[str, str]] | None:
    """The `store:` name a step writes and its key path inside the step, if it names one.

    A window and the aggregate after it are one store: the window's name counts when both
    give one (the graph builder reports two different names on them)."""
    if isinstance(step, WindowStep) and step.window.store:
        return step.window.store, ("window", "store")
    if isinstance(step, AggregateStep) and step.aggregate.store:
        if isinstance(previous, WindowStep) and previous.window.store:
            return None
        return step.aggregate.store, ("aggregate", "store")
    if isinstance(step, ProcessStep) and step.process.store:
        return step.process.store, ("process", "store")
    if isinstance(step, IntervalJoinStep) and step.interval_join.store:
        return step.interval_join.store, ("interval_join", "store")
    if isinstance(step, ReconcileStep) and step.reconcile.store:
        return step.reconcile.store, ("reconcile", "store")
    return None


def _named_stores(loaded: LoadedSpec) -> list[tuple[str, PathT]]:
    """Store names written in the spec, each with the path of its `store:` key; generated
    names (`aggregate-0-2`) are the graph builder's to check."""
    out: list[tuple[str, PathT]] = []
    for i, pipeline in enumerate(loaded.spec.pipelines):
        for path, step, previous in walk_steps(pipeline.steps, ("pipelines", i, "steps")):
            found = _store_key(step, previous)
            if found is not None:
                out.append((found[0], (*path, *found[1])))
    return out


def _duplicate_stores(loaded: LoadedSpec) -> list[SpecError]:
    """Two stateful steps with one `store:` name would share state, changelog and repartition
    topic; the second one is reported."""
    seen: set[str] = set()
    errors = []
    for name, path in _named_stores(loaded):
        if name in seen:
            errors.append(loaded.error(path, f"store name {name!r} is used twice"))
        seen.add(name)
    return errors


def check_spec(loaded: LoadedSpec) -> list[SpecError]:
    """All whole-spec errors of a schema-valid topology (empty when there are none)."""
    return [*_cycles(loaded), *_dead_letters_read_back(loaded), *_duplicate_stores(loaded)]
