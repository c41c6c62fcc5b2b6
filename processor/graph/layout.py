"""The state layout of a built topology: per store, everything that decides how its bytes are read.

A store's bytes only mean something to the operator that wrote them: an aggregate's value is a
positional list of accumulators (operators/aggregate.py), windows key their entries by window
bounds, joins and process functions keep their own records. A layout names the operator kind,
the key of the state (its format, and where it comes from: a source topic's record key, or a
`key_by` / `python` step, through repartition topics), and the operator's own facts (the
aggregate's ordered fields, the window's shape, the join's kind and sides, the process
function). Two topologies whose layouts of a store are equal read its state the same way;
graph/compat.py classifies the differences. The worker records each store's layout beside its
state (local metadata and changelog) and compares it when the store is restored.

The facts a factory knows (fields, window, function) come from `StepNode.state`; the key's
origin is found here, by walking the chains back from the store's step.
"""

from __future__ import annotations

import ast
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from processor.graph.model import SubTopology, Topology
    from processor.operators.aggregate import FieldAgg
    from processor.spec.steps import WindowSpec

REKEYING = ("key_by", "python")  # step kinds that change the record key


def canonical(obj: Any) -> bytes:
    """Canonical JSON: sorted keys, no spaces; equal facts give equal bytes."""
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


@dataclass(frozen=True)
class StoreLayout:
    """One store: its name, changelog topic and facts (`operator`, `key`, the operator's own)."""

    store: str
    changelog: str
    facts: dict[str, Any]

    @property
    def operator(self) -> str:
        return str(self.facts["operator"])

    @property
    def fingerprint(self) -> str:
        """12 hex digits over the facts, not the name: a renamed store keeps its fingerprint."""
        return hashlib.sha256(canonical(self.facts)).hexdigest()[:12]

    def to_dict(self) -> dict[str, Any]:
        return {"store": self.store, "changelog": self.changelog, "fingerprint": self.fingerprint,
                **self.facts}

    def to_json(self) -> bytes:
        """What the worker records with the state (canonical JSON)."""
        return canonical(self.to_dict())

    @classmethod
    def from_json(cls, raw: bytes) -> StoreLayout:
        data = orjson.loads(raw)
        data.pop("fingerprint", None)
        return cls(data.pop("store"), data.pop("changelog"), data)


@dataclass(frozen=True)
class RepartitionLayout:
    """An internal repartition topic: its key format and what feeds it (feeder order)."""

    topic: str
    key_format: str
    feeders: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"topic": self.topic, "key_format": self.key_format, "feeders": list(self.feeders)}


@dataclass(frozen=True)
class StateLayout:
    """A topology's stores and repartition topics, plus its stateless steps (for the diff)."""

    application: str
    stores: dict[str, StoreLayout]
    repartitions: dict[str, RepartitionLayout]
    stateless: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"application": self.application,
                "stores": [s.to_dict() for s in self.stores.values()],
                "repartition_topics": [r.to_dict() for r in self.repartitions.values()],
                "stateless_steps": list(self.stateless)}


# -- facts the step factories record (StepNode.state) ----------------------------------------

def aggregate_facts(fields: list[FieldAgg]) -> list[dict[str, Any]]:
    """An aggregate's fields in accumulator order, each with its function and expression."""
    out = []
    for f in fields:
        fact: dict[str, Any] = {"name": f.name, "function": f.func,
                                "expression": f.expr if f.func != "python" else f.reducer}
        if f.func == "python":
            fact["initial"] = f.initial
            fact["merge"] = f.merge
        out.append(fact)
    return out


def window_facts(w: WindowSpec) -> dict[str, Any]:
    """A window's shape: kind and sizes in ms (count windows: records)."""
    match w.kind:
        case "tumbling":
            return {"kind": "tumbling", "size": w.tumbling}
        case "hopping":
            assert w.hopping is not None
            return {"kind": "hopping", "size": w.hopping.size, "advance": w.hopping.advance}
        case "sliding":
            return {"kind": "sliding", "size": w.sliding}
        case "session":
            assert w.session is not None
            return {"kind": "session", "gap": w.session.gap}
    assert w.count is not None
    return {"kind": "count", "size": w.count.size, "slide": w.count.slide}


# -- extraction ------------------------------------------------------------------------------

def _normalized(source: str) -> str:
    """An expression as Python prints it back, so spacing and quotes do not count as changes."""
    try:
        return ast.unparse(ast.parse(source.strip(), mode="eval"))
    except SyntaxError:  # a python: reference
        return source


class _Keys:
    """Where a record's key comes from at a point of a sub-topology's chains."""

    def __init__(self, topology: Topology) -> None:
        self.feeders: dict[str, list[tuple[SubTopology, int, int]]] = {}
        found: dict[str, dict[int, tuple[SubTopology, int, int]]] = {}
        for sub in topology.subtopologies:
            for ci, chain in enumerate(sub.chains):
                for i, step in enumerate(chain):
                    if step.sink is not None and step.sink.internal:
                        found.setdefault(step.sink.topic, {})[step.sink.feeder] = (sub, ci, i)
        self.feeders = {t: [f[n] for n in sorted(f)] for t, f in found.items()}
        self.side = {(sub.id, ci, i): sub.chains[ci][i].sink.side  # type: ignore[union-attr]
                     for fs in self.feeders.values() for sub, ci, i in fs}

    def origins(self, sub: SubTopology, ci: int, i: int, seen: frozenset[str] = frozenset()
                ) -> list[str]:
        """The key at step i of chain ci: the nearest re-keying step before it (through the
        parent chains of branch cases), else the source's record key; after a repartition
        topic, its feeders' keys (a join's tagged with their side)."""
        while True:
            for step in reversed(sub.chains[ci][:i]):
                if step.kind in REKEYING:
                    return [f"{step.kind} {_normalized(step.label)}"]
            if ci not in sub.parents:
                break
            ci = sub.parents[ci][0]
            i = len(sub.chains[ci])
        src = sub.source
        if not src.internal:
            return [f"record key of topic {src.topic} ({src.key_format})"]
        if src.topic in seen:
            return []
        out = []
        for fsub, fci, fi in self.feeders.get(src.topic, []):
            side = self.side[(fsub.id, fci, fi)]
            prefix = "" if side is None else f"side {side}: "
            out += [prefix + o for o in self.origins(fsub, fci, fi, seen | {src.topic})]
        return out


def state_layout(topology: Topology) -> StateLayout:
    """The layout of every store and repartition topic of a built topology."""
    keys = _Keys(topology)
    stores: dict[str, StoreLayout] = {}
    stateless: list[str] = []
    for sub in topology.subtopologies:
        for ci, chain in enumerate(sub.chains):
            for i, step in enumerate(chain):
                if step.store is None or step.state is None:
                    if step.sink is None or not step.sink.internal:
                        stateless.append(f"{step.kind} {step.label}".rstrip())
                    continue
                facts = dict(step.state)
                facts["key"] = {"format": facts.pop("key_format"),
                                "from": keys.origins(sub, ci, i)}
                stores[step.store.name] = StoreLayout(step.store.name, step.store.changelog_topic,
                                                      facts)
    repartitions = {}
    for sub in topology.subtopologies:
        if sub.source.internal:
            topic = sub.source.topic
            repartitions[topic] = RepartitionLayout(topic, sub.source.key_format,
                                                    tuple(keys.origins(sub, 0, 0)))
    return StateLayout(topology.name, stores, repartitions, tuple(sorted(set(stateless))))
