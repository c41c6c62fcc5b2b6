"""`describe --format mermaid|dot`: both pictures parsed back into the same nodes and edges."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from processor.cli import main
from processor.graph import build_topology
from processor.graph.diagram import build_diagram, to_dot, to_mermaid
from processor.spec import load_spec_text

# a key change before a table join (repartition), an interval join of two streams (repartition of
# both into one topic, a store with a changelog), a late-records topic and a branch
SPEC = """\
name: shop
sources:
  tx: {topic: transactions, partitions: 4, timestamp: {field: ts}}
  customers: {topic: customers, kind: table, partitions: 2}
  shipments: {topic: shipments, partitions: 4, timestamp: {field: ts}}
pipelines:
  - from: tx
    steps:
      - key_by: "value['customer_id']"
      - join: {table: customers, as: customer}
      - interval_join: {with: shipments, before: 1m, after: 1h}
      - branch:
          - when: "value['amount'] > 100"
            steps: [{to: {topic: big, partitions: 1}}]
          - default:
              - to: {topic: small, partitions: 1}
"""

# the edges every rendering must carry, by the labels of their ends (a prefix for steps)
EXPECTED = {
    ("transactions", "key_by value['customer_id']"),
    ("key_by value['customer_id']", "to shop-join-0-1-repartition"),
    ("to shop-join-0-1-repartition", "shop-join-0-1-repartition"),
    ("shop-join-0-1-repartition", "join"),
    ("customers", "join"),
    ("join", "to shop-join-0-2-repartition"),
    ("shipments", "to shop-join-0-2-repartition"),
    ("to shop-join-0-2-repartition", "shop-join-0-2-repartition"),
    ("shop-join-0-2-repartition", "interval_join"),
    ("branch value['amount'] > 100 | default", "to big"),
    ("branch value['amount'] > 100 | default", "to small"),
    ("to big", "big"),
    ("to small", "small"),
}


def topology():
    return build_topology(load_spec_text(SPEC))


def _edges_by_label(nodes: dict[str, str], edges: list[tuple[str, str]]) -> set[tuple[str, str]]:
    return {(nodes[a], nodes[b]) for a, b in edges}


def _covers(edges: set[tuple[str, str]], src: str, dst: str) -> bool:
    return any(a.startswith(src) and b.startswith(dst) for a, b in edges)


def parse_mermaid(text: str) -> tuple[dict[str, str], set[tuple[str, str]], list[str]]:
    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    nodes = {m[1]: m[2].replace("#quot;", '"') for line in lines
             if (m := re.fullmatch(r'\s*(\w+)(?:\[/|\[\(|\[)"(.*)"(?:/\]|\)\]|\])', line))}
    edges = [(m[1], m[2]) for line in lines
             if (m := re.fullmatch(r'\s*(\w+) -(?:->|\.->)(?:\|"[^"]*"\|)? (\w+)', line))]
    groups = [m[1] for line in lines if (m := re.fullmatch(r'\s*subgraph \w+\["(.*)"\]', line))]
    assert len(edges) == sum("--" in line or "-.->" in line for line in lines)
    return nodes, _edges_by_label(nodes, edges), groups


def parse_dot(text: str) -> tuple[dict[str, str], set[tuple[str, str]], list[str]]:
    assert text.startswith('digraph "shop" {') and text.rstrip().endswith("}")
    assert text.count("{") == text.count("}")
    nodes = {m[1]: m[2].replace('\\"', '"') for m in
             re.finditer(r'^\s*(\w+) \[label="((?:[^"\\]|\\.)*)", shape=\w+', text, re.M)}
    edges = [(m[1], m[2]) for m in re.finditer(r"^\s*(\w+) -> (\w+)", text, re.M)]
    groups = re.findall(r'^\s*label="(sub-topology \d+)";', text, re.M)
    return nodes, _edges_by_label(nodes, edges), groups


@pytest.mark.parametrize("render,parse", [(to_mermaid, parse_mermaid), (to_dot, parse_dot)])
def test_picture_has_topics_steps_stores_changelogs_and_sub_topologies(render, parse):
    topo = topology()
    nodes, edges, groups = parse(render(build_diagram(topo)))
    for src, dst in EXPECTED:
        assert _covers(edges, src, dst), (src, dst, sorted(edges))
    assert groups == [f"sub-topology {s.id}" for s in topo.subtopologies]
    (store,) = topo.stores
    assert _covers(edges, "interval_join", f"store {store.name}")
    assert (f"store {store.name}", store.changelog_topic) in edges
    # every topic the topology reads or writes is one node, drawn once
    labels = list(nodes.values())
    for topic in ["transactions", "customers", "shipments", "big", "small",
                  "shop-join-0-1-repartition", store.changelog_topic]:
        assert labels.count(topic) == 1, topic


def test_mermaid_and_dot_draw_the_same_graph():
    diagram = build_diagram(topology())
    m_nodes, m_edges, _ = parse_mermaid(to_mermaid(diagram))
    d_nodes, d_edges, _ = parse_dot(to_dot(diagram))
    assert m_nodes == d_nodes and m_edges == d_edges
    assert len(m_nodes) == len(diagram.nodes)


def test_double_quotes_in_labels_are_escaped():
    spec = SPEC.replace('"value[\'amount\'] > 100"', '\'value["amount"] > 100\'')
    topo = build_topology(load_spec_text(spec))
    diagram = build_diagram(topo)
    mermaid, dot = to_mermaid(diagram), to_dot(diagram)
    assert 'branch value[#quot;amount#quot;] > 100' in mermaid
    assert 'branch value[\\"amount\\"] > 100' in dot
    assert parse_mermaid(mermaid)[1] == parse_dot(dot)[1]


@pytest.mark.skipif(shutil.which("dot") is None,
                    reason="Graphviz `dot` is not installed: scripts/install-graphviz.sh")
def test_graphviz_accepts_the_dot_output():
    out = subprocess.run(["dot", "-Tsvg"], input=to_dot(build_diagram(topology())),
                         capture_output=True, text=True, check=True)
    assert "<svg" in out.stdout


def test_cli_describe_formats(tmp_path, capsys):
    path = tmp_path / "shop.yaml"
    path.write_text(SPEC)
    assert main(["describe", str(path)]) == 0
    text = capsys.readouterr().out
    assert text == topology().describe() + "\n"
    assert main(["describe", str(path), "--format", "mermaid"]) == 0
    assert capsys.readouterr().out == to_mermaid(build_diagram(topology())) + "\n"
    assert main(["describe", str(path), "--format", "dot"]) == 0
    assert capsys.readouterr().out.startswith('digraph "shop" {')


def test_readme_diagram_is_the_commands_current_output():
    from processor.spec import load_spec
    from tests.paths import REPO

    readme = (REPO / "README.md").read_text()
    command = "processor describe topologies/reconciliation.yaml --format mermaid"
    assert command in readme
    block = readme.split("```mermaid\n", 1)[1].split("\n```", 1)[0]
    topo = build_topology(load_spec(REPO / "topologies" / "reconciliation.yaml"))
    assert block == to_mermaid(build_diagram(topo))
