"""Spec -> DAG of operators, split into sub-topologies at repartition points."""

from processor.graph.nodes import BuildContext, StepNode, StoreDef, TopicEnd
from processor.graph.topology import SubTopology, Topology, build_topology

__all__ = ["BuildContext", "StepNode", "StoreDef", "SubTopology", "TopicEnd", "Topology",
           "build_topology"]
