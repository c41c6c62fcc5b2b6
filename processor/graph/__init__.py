"""Spec -> DAG of operators, split into sub-topologies at repartition points."""

from processor.graph.topology import (
    BuildContext,
    StepNode,
    StoreDef,
    SubTopology,
    TopicEnd,
    Topology,
    build_topology,
)

__all__ = ["BuildContext", "StepNode", "StoreDef", "SubTopology", "TopicEnd", "Topology",
           "build_topology"]
