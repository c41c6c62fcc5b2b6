"""Spec -> DAG of operators, split into sub-topologies at repartition points."""

from processor.graph.builder import build_topology
from processor.graph.model import BuildContext, StepNode, StoreDef, SubTopology, TopicEnd, Topology

__all__ = ["BuildContext", "StepNode", "StoreDef", "SubTopology", "TopicEnd", "Topology",
           "build_topology"]
