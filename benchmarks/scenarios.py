"""What the benchmark measures: its scenarios (topology, input generator, targets) and what a
topology reads and writes, taken from the topology itself."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from processor.graph import build_topology
from processor.spec import load_spec

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
GUARANTEES = ("exactly_once", "at_least_once")
MIN_RESTORE_RECORDS = 500_000


@dataclass(frozen=True)
class Scenario:
    name: str
    topology: Path
    # input generator (see `generate`): "user": keyed by user id; "order": keyed by order id;
    # "unique": one key per record; "customer": transactions keyed by customer id;
    # "order_payment": orders and payments keyed by order id (two input topics);
    # "user_events": typed events (a, b, c, other) keyed by user id, event time 1 ms apart
    keys: str
    description: str
    targets: dict[str, tuple[str, float]] = field(default_factory=dict)  # guarantee|* -> (metric, min)
    # emit-final windows output only once the watermark passes a window's end: the produce ->
    # output latency run would measure the window size, not the processor
    latency: bool = True
    # after each throughput run, read the output topics back (read_committed under EOS) and
    # check the record count: `outputs(input records)` -> expected output records
    outputs: Callable[[int], int] | None = None
    # input rate of the latency run, unless --latency-rate is given: below the scenario's
    # throughput, else the run measures a growing backlog rather than the processor's latency
    latency_rate: float | None = None
    # run benchmarks/raw_loop.py over the topology's topics instead of a worker, a ceiling:
    # "copy" (every record to the output topic) or "read" (consume and commit only)
    raw: Literal["copy", "read"] | None = None
    # (broker, guarantee) -> why this scenario cannot be measured there: reported, not run
    unsupported: dict[tuple[str, str], str] = field(default_factory=dict)


TANSU_EMPTY_TRANSACTIONS = (
    "Tansu drops the offsets of a transaction holding no records after a producer's first one "
    "(1M records: 3 of 4 partitions never got a committed offset), so the run never drains; "
    "Apache Kafka keeps them")

SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("raw", BENCH / "topologies" / "passthrough.yaml", "order",
             "the ceiling: benchmarks/raw_loop.py copies each record unchanged to an output "
             "topic with the worker's clients, poll and commits; no worker, no processing",
             outputs=lambda n: n, raw="copy"),
    Scenario("raw_read", BENCH / "topologies" / "passthrough.yaml", "order",
             "the read side's ceiling: benchmarks/raw_loop.py --read-only consumes and commits "
             "(offsets in a transaction under exactly_once) and produces nothing",
             outputs=lambda n: 0, raw="read",
             unsupported={("tansu", "exactly_once"): TANSU_EMPTY_TRANSACTIONS}),
    Scenario("aggregate", BENCH / "topologies" / "user_totals.yaml", "user",
             "count()+sum() per user on the source key (no repartition), 1 store",
             {"exactly_once": ("records_per_s", 100_000)}),
    Scenario("aggregate_repartition", ROOT / "topologies" / "revenue_per_user.yaml", "order",
             "topologies/revenue_per_user.yaml: filter, key_by user, repartition, 5-field aggregate, map",
             {"exactly_once": ("records_per_s", 100_000)}),
    Scenario("stateless", BENCH / "topologies" / "clean_orders.yaml", "order",
             "filter + map projection (copy of topologies/clean_orders.yaml)",
             {"*": ("records_per_s", 200_000)}),
    Scenario("tumbling", BENCH / "topologies" / "tumbling_totals.yaml", "user_dense",
             "10 s tumbling window count()+sum() per user, emit final, event time 1 ms apart",
             {"exactly_once": ("records_per_s", 100_000)}, latency=False),
    Scenario("session", BENCH / "topologies" / "session_totals.yaml", "user_dense",
             "session windows (2 s gap) count()+sum() per user, emit final, event time 1 ms apart",
             {"exactly_once": ("records_per_s", 50_000)}, latency=False),
    Scenario("pattern", BENCH / "topologies" / "pattern_3stage.yaml", "user_events",
             "3-stage pattern a -> b -> c (followed_by, within 10 s) per user, event time 1 ms "
             "apart; matches to a sink, timeouts to their topic",
             {"exactly_once": ("records_per_s", 50_000)}),
    Scenario("enrichment_join", BENCH / "topologies" / "enrichment_join.yaml", "customer",
             "transactions keyed by customer id, left join with a `table` of customers "
             "(co-partitioned, bootstrapped before the first record), sink",
             {"exactly_once": ("records_per_s", 100_000)}, outputs=lambda n: n),
    Scenario("enrichment_join_global", BENCH / "topologies" / "enrichment_join_global.yaml",
             "customer",
             "same with a `global_table` of customers (read whole before the worker processes "
             "anything; stateless input task)",
             {"exactly_once": ("records_per_s", 100_000)}, outputs=lambda n: n),
    Scenario("interval_join", BENCH / "topologies" / "interval_join.yaml", "order_payment",
             "orders + payments keyed by order id, inner interval join (payment within [-1m, +5m] "
             "of its order, event time), both repartitioned into the join task; records = both "
             "topics", outputs=lambda n: n // 2, latency_rate=5_000),
    Scenario("restore", BENCH / "topologies" / "user_totals.yaml", "unique",
             "aggregate over one key per record (changelog >= 500k records), then restore it "
             "into a fresh state dir",
             {"*": ("restore_records_per_s", 300_000)}),
)}


@dataclass(frozen=True)
class TopologyInfo:
    name: str  # application name = consumer group
    inputs: list[str]  # external stream topics (the records counted)
    outputs: list[str]  # external sink topics
    tables: list[str]  # table / global table topics, produced before the worker starts

    @property
    def input(self) -> str:
        assert len(self.inputs) == 1, self.inputs
        return self.inputs[0]


def topology_info(path: Path) -> TopologyInfo:
    topo = build_topology(load_spec(path))
    inputs = [s.source.topic for s in topo.subtopologies if not s.source.internal]
    outputs = [e.topic for s in topo.subtopologies for e in s.sinks if not e.internal]
    tables = [t.topic for t in (*(t for s in topo.subtopologies for t in s.tables),
                                *topo.global_tables)]
    return TopologyInfo(topo.name, inputs, outputs, list(dict.fromkeys(tables)))




def topic_set(topic: str | list[str]) -> set[str]:
    return {topic} if isinstance(topic, str) else set(topic)
