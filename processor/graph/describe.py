"""`processor describe`: a built topology as text, so a reader sees what will run before it runs:
sub-topologies and their chains, stores and changelogs, tables, repartition and dead-letter topics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from processor.graph.model import StepNode, Topology

_TABLE_PLACES = {"table": "RocksDB per task, partition p next to stream partition p",
                 "global_table": "RocksDB on every worker, all partitions",
                 "broadcast": "in memory on every worker, all partitions"}


def describe_step(step: StepNode) -> str:
    text = f"{step.kind} {step.label}".rstrip()
    if step.store:
        text += f" [store {step.store.name}, changelog {step.store.changelog_topic}]"
    if step.sink:
        text += " [repartition]" if step.sink.internal else ""
    if step.late:
        text += f" [late records to {step.late.topic}]"
    if step.side:
        text += f" [timeouts to {step.side.topic}]"
    if step.table:
        text += f" [{step.table.kind.replace('_', ' ')} {step.table.name} <- {step.table.topic}]"
    if step.on_error != "dlq":
        text += f" [on_error {step.on_error}]"
    return text


def describe_topology(topology: Topology) -> str:
    lines = [f"Topology {topology.name} (consumer group {topology.name!r})"]
    for sub in topology.subtopologies:
        src = sub.source
        kind = "internal repartition topic" if src.internal else "topic"
        lines.append(f"  Sub-topology {sub.id}: reads {kind} {src.topic} "
                     f"(key {src.key_format}, value {src.value_format}"
                     + (f", event time from value field {src.timestamp_field!r}"
                        if src.timestamp_field else "") + f", on_error {src.on_error})")
        if src.internal:
            lines.append("    watermark: minimum over the partitions of "
                         + ", ".join(dict.fromkeys(src.upstream_topics)))
        elif src.max_out_of_orderness_ms or src.idle_timeout_ms:
            idle = (f", idle after {src.idle_timeout_ms}ms without records"
                    if src.idle_timeout_ms else "")
            lines.append(f"    watermark: max event time - {src.max_out_of_orderness_ms}ms{idle}")
        for ci, chain in enumerate(sub.chains):
            if ci in sub.parents:
                parent, case = sub.parents[ci]
                lines.append(f"    case {case} of the branch ending chain {parent}:")
            for step in chain:
                lines.append(f"    -> {describe_step(step)}")
            lines.append("    .")
    stores = topology.stores
    lines.append("  State stores:" if stores else "  State stores: none")
    lines.extend(f"    {s.name}: RocksDB per partition, changelog topic {s.changelog_topic} "
                 f"(compacted), sub-topology {s.subtopology}" for s in stores)
    for t in [*{t for sub in topology.subtopologies for t in sub.tables}, *topology.global_tables,
              *topology.broadcasts]:
        lines.append(f"  {t.kind.replace('_', ' ').capitalize()} {t.name}: topic {t.topic} "
                     f"({_TABLE_PLACES[t.kind]}; the topic is its log, no changelog)")
    internal = [s.source.topic for s in topology.subtopologies if s.source.internal]
    lines.append("  Repartition topics: " + (", ".join(internal) if internal else "none"))
    lines.append(f"  Dead-letter topic: {topology.dlq_topic} "
                 "(records that fail under on_error: dlq)")
    return "\n".join(lines)
