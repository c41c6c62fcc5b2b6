"""`processor describe --format mermaid|dot`: the topology as a picture.

One graph model (topics, sub-topology steps, stores, edges) built from the topology, and two
renderers over it, so Mermaid and Graphviz always draw the same DAG: topics are the boundaries
between sub-topologies (a repartition topic is written by one and read by another), stores hang
off the step that owns them and feed their changelog topic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from processor.graph.model import Topology

# node kinds -> (Mermaid shape brackets, Graphviz shape)
_SHAPES = {"topic": (("[/", "/]"), "parallelogram"),
           "repartition": (("[/", "/]"), "parallelogram"),
           "step": (("[", "]"), "box"),
           "store": (("[(", ")]"), "cylinder")}


@dataclass(frozen=True)
class Node:
    id: str
    label: str
    kind: str  # topic | repartition | step | store
    group: int | None = None  # the sub-topology a step belongs to


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    label: str = ""
    dashed: bool = False  # late records, changelogs, table reads: side paths


@dataclass
class Diagram:
    title: str
    nodes: dict[str, Node] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)

    def topic(self, name: str, internal: bool = False) -> str:
        """A topic's node, added the first time it is named (written by one sub-topology and
        read by another, a topic is one node)."""
        for node in self.nodes.values():
            if node.kind in ("topic", "repartition") and node.label == name:
                return node.id
        return self.add(name, "repartition" if internal else "topic")

    def add(self, label: str, kind: str, group: int | None = None) -> str:
        node_id = f"{kind}_{len(self.nodes)}"
        self.nodes[node_id] = Node(node_id, label, kind, group)
        return node_id

    def connect(self, src: str, dst: str, label: str = "", dashed: bool = False) -> None:
        self.edges.append(Edge(src, dst, label, dashed))


def build_diagram(topology: Topology) -> Diagram:
    diagram = Diagram(topology.name)
    for sub in topology.subtopologies:
        source = diagram.topic(sub.source.topic, sub.source.internal)
        chain_ends: list[str] = []
        for ci, chain in enumerate(sub.chains):
            prev, label = source, ""
            if ci in sub.parents:
                parent, case = sub.parents[ci]
                prev, label = chain_ends[parent], f"case {case}"
            for step in chain:
                node = diagram.add(f"{step.kind} {step.label}".rstrip(), "step", sub.id)
                diagram.connect(prev, node, label)
                prev, label = node, ""
                if step.store:
                    store = diagram.add(f"store {step.store.name}", "store", sub.id)
                    diagram.connect(node, store)
                    diagram.connect(store, diagram.topic(step.store.changelog_topic),
                                    "changelog", dashed=True)
                if step.sink:
                    diagram.connect(node, diagram.topic(step.sink.topic, step.sink.internal))
                if step.late:
                    diagram.connect(node, diagram.topic(step.late.topic), "late", dashed=True)
                if step.side:
                    diagram.connect(node, diagram.topic(step.side.topic), "timeouts", dashed=True)
                if step.table:
                    diagram.connect(diagram.topic(step.table.topic), node,
                                    step.table.kind.replace("_", " "), dashed=True)
            chain_ends.append(prev)
    return diagram


def _mermaid_text(text: str) -> str:
    return '"' + text.replace('"', "#quot;") + '"'


def to_mermaid(diagram: Diagram) -> str:
    lines = ["flowchart LR"]
    groups: dict[int | None, list[Node]] = {}
    for node in diagram.nodes.values():
        groups.setdefault(node.group, []).append(node)

    def node_line(node: Node) -> str:
        opening, closing = _SHAPES[node.kind][0]
        return f"{node.id}{opening}{_mermaid_text(node.label)}{closing}"

    lines.extend(f"  {node_line(n)}" for n in groups.pop(None, []))
    for gid, nodes in groups.items():
        lines.append(f'  subgraph sub{gid}["sub-topology {gid}"]')
        lines.extend(f"    {node_line(n)}" for n in nodes)
        lines.append("  end")
    for e in diagram.edges:
        arrow = "-.->" if e.dashed else "-->"
        label = f"|{_mermaid_text(e.label)}|" if e.label else ""
        lines.append(f"  {e.src} {arrow}{label} {e.dst}")
    return "\n".join(lines)


def _dot_text(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(diagram: Diagram) -> str:
    lines = [f"digraph {_dot_text(diagram.title)} {{", "  rankdir=LR;",
             '  node [fontname="Helvetica", fontsize=10];']
    groups: dict[int | None, list[Node]] = {}
    for node in diagram.nodes.values():
        groups.setdefault(node.group, []).append(node)

    def node_line(node: Node) -> str:
        style = ', style=dashed' if node.kind == "repartition" else ""
        return f"{node.id} [label={_dot_text(node.label)}, shape={_SHAPES[node.kind][1]}{style}];"

    lines.extend(f"  {node_line(n)}" for n in groups.pop(None, []))
    for gid, nodes in groups.items():
        lines.append(f"  subgraph cluster_{gid} {{")
        lines.append(f"    label={_dot_text(f'sub-topology {gid}')};")
        lines.extend(f"    {node_line(n)}" for n in nodes)
        lines.append("  }")
    for e in diagram.edges:
        attrs = [f"label={_dot_text(e.label)}"] if e.label else []
        attrs += ["style=dashed"] if e.dashed else []
        lines.append(f"  {e.src} -> {e.dst}" + (f" [{', '.join(attrs)}]" if attrs else "") + ";")
    lines.append("}")
    return "\n".join(lines)
