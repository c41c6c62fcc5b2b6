"""Rescaling a savepoint's state (tools/savepoint_rescale.py), without a broker: the record key
of every key family of every stateful operator, read from real RocksDB stores the operators
wrote (TopologyTestDriver); the partitioner self-check; where entries and in-flight records
go; the retired slots keeping every in-flight record admitted once, through the real
repartition decoder; the merged watermark states."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from processor.graph.layout import state_layout
from processor.spec import load_spec_text
from processor.state.partitioner import partition_for
from processor.testing.driver import TopologyTestDriver
from processor.timeutil.watermark import NO_WATERMARK
from processor.tools.savepoint_format import SavepointError, decode_bytes, encode_bytes
from processor.tools.savepoint_rescale import (
    Slots,
    merged_source_time,
    merged_upstream_time,
    plan_store,
    redistribute_inflight,
    retired_marks,
    store_keys,
)

TOPOLOGY = """
name: rescale
sources:
  events:
    topic: events
    key: {format: string}
    value: {format: json}
    timestamp: {field: ts}
  other:
    topic: other
    key: {format: string}
    value: {format: json}
    timestamp: {field: ts}
pipelines:
  - from: events
    steps:
      - key_by: "value['user']"
      - aggregate: {store: totals, n: count()}
  - from: events
    steps:
      - key_by: "value['user']"
      - window: {tumbling: 1s, emit: final, late: drop}
      - aggregate: {store: tumbles, n: count()}
  - from: events
    steps:
      - window: {session: 10s, emit: final, late: drop}
      - aggregate: {store: sessions, n: count()}
  - from: events
    steps:
      - window: {sliding: 5s, emit: final, late: drop}
      - aggregate: {store: slides, n: count()}
  - from: events
    steps:
      - window: {count: {size: 3}, late: drop}
      - aggregate: {store: counts, n: count()}
  - from: events
    steps:
      - process:
          python: "tests.unit.tools.rescale_fns:track"
          on_timer: "tests.unit.tools.rescale_fns:fire"
          store: proc
      - to: {topic: fired, partitions: 1}
  - from: events
    name: joins
    steps:
      - key_by: "value['user']"
      - interval_join: {with: other, key: "value['user']", before: 1h, after: 1h, store: matched}
      - to: {topic: joined, partitions: 1}
  - from: events
    name: patterns
    steps:
      - key_by: "value['user']"
      - pattern:
          stages:
            - {name: even, where: "value['i'] % 2 == 0"}
            - {name: third, where: "value['i'] % 3 == 0"}
          within: 1h
          timeouts: drop
          late: drop
          store: patterns
      - to: {topic: patterned, partitions: 1}
  - from: events
    name: groups
    steps:
      - key_by: "value['user']"
      - reconcile: {with: [other], keys: {other: "value['user']"}, timeout: 1h, store: groups}
      - to: {topic: reconciled, partitions: 1}
"""
USERS = [f"user-{i}" for i in range(12)]
FAMILIES = {"totals": {"<key>"}, "tumbles": {"W", "M"}, "sessions": {"K", "E", "M"},
            "slides": {"K", "E", "M"}, "counts": {"C"}, "proc": {"s", "t"},
            "matched": {"i"}, "groups": {"g"}, "patterns": {"K", "E", "M"}}


@pytest.fixture(scope="module")
def stores() -> Any:
    loaded = load_spec_text(TOPOLOGY)
    with TopologyTestDriver(loaded, partitions={"events": 3, "other": 3}) as driver:
        for i in range(60):
            user = USERS[i % len(USERS)]
            ts = 1_000 * i
            driver.pipe("events", user, {"user": user, "i": i, "ts": ts}, ts)
            if i % 2:
                driver.pipe("other", f"o-{i}", {"user": user, "ts": ts + 5}, ts + 5)
        driver.run()
        driver.checkpoint()
        layouts = state_layout(driver.topology).stores
        found: dict[str, dict[int, list[tuple[bytes, bytes]]]] = {}
        for task in driver.tasks:
            for name, store in task.stores.items():
                found.setdefault(name, {})[task.partition] = list(store.items())
        yield layouts, found


def _decoded(layout: Any, key: bytes) -> str:
    """The key as its store's key format reads it (json after a key_by, else string)."""
    return orjson.loads(key) if layout.facts["key"]["format"] == "json" else key.decode()


def test_every_key_family_of_every_operator_names_its_record_key(stores) -> None:
    layouts, found = stores
    assert set(found) == set(FAMILIES)
    for name, partitions in found.items():
        keys, seen = store_keys(layouts[name]), set()
        assert sum(len(e) for e in partitions.values()) > 0, name
        for partition, entries in partitions.items():
            for store_key, _ in entries:
                record_key = keys.record_key(store_key)
                family = "<key>" if name == "totals" else chr(store_key[0])
                seen.add(family)
                if record_key is None:
                    assert store_key == b"M", (name, store_key)
                    continue
                assert _decoded(layouts[name], record_key) in USERS, (name, store_key)
                # each entry sits where Kafka's partitioner puts its key: the self-check holds
                assert partition_for(record_key, 3) == partition, (name, store_key)
        assert seen == FAMILIES[name], (name, seen)


def _entries(found: dict[int, list[tuple[bytes, bytes]]]):
    return lambda store, partition: iter(found.get(partition, []))


def test_state_moves_to_the_partition_of_its_key_and_bookkeeping_merges(stores) -> None:
    layouts, found = stores
    for name in ("tumbles", "sessions", "proc", "groups", "patterns"):
        entries = _entries(found[name])
        for new in (8, 2):
            move = plan_store(layouts[name], 3, new, entries)
            moved = list(move.moved(entries))
            keys = store_keys(layouts[name])
            data = [(q, k) for q, k, _ in moved if keys.record_key(k) is not None]
            assert len(data) == sum(1 for e in found[name].values() for k, _ in e
                                    if keys.record_key(k) is not None)
            assert all(partition_for(keys.record_key(k), new) == q for q, k in data)
            if name in ("tumbles", "sessions", "patterns"):  # one merged M in every new partition
                ms = {q: v for q, k, v in moved if k == b"M"}
                assert set(ms) == set(range(new))
                assert {orjson.loads(v) for v in ms.values()} == {max(
                    orjson.loads(v) for e in found[name].values() for k, v in e if k == b"M")}
            for q, olds in move.sources.items():
                assert all(0 <= p < 3 for p in olds) and 0 <= q < new


def test_self_check_refuses_entries_not_partitioned_by_murmur2() -> None:
    layouts = state_layout(_aggregate_topology()).stores
    # keys written as non-compact JSON by their producer: the store holds other bytes
    key = b'{"user": "a"}'
    wrong = next(p for p in range(4) if p != partition_for(key, 4))
    entries = _entries({wrong: [(key, b"[1]")]})
    with pytest.raises(SavepointError) as err:
        plan_store(layouts["totals"], 4, 8, entries)
    msg = str(err.value)
    assert f"store 'totals' (operator aggregate) partition {wrong} holds key" in msg
    assert f"puts in partition {partition_for(key, 4)}" in msg
    assert "apart from the partition its producer sends its records to" in msg
    # the same entries restored into the same count are not moved, hence not checked
    assert list(plan_store(layouts["totals"], 4, 4, entries).moved(entries)) == [
        (wrong, key, b"[1]")]


def test_an_unknown_key_family_is_refused_with_the_store_and_operator(stores) -> None:
    layouts, _ = stores
    entries = _entries({0: [(b"Zjunk", b"1")]})
    with pytest.raises(SavepointError, match=r"store 'tumbles' \(operator window\) partition 0: "
                                             r"entry 'Zjunk' is of no key family"):
        plan_store(layouts["tumbles"], 3, 6, entries)


def _aggregate_topology():
    from processor.graph import build_topology

    return build_topology(load_spec_text("""
name: shop
sources:
  orders: {topic: orders, key: {format: json}}
pipelines:
  - from: orders
    steps:
      - aggregate: {store: totals, n: count()}
"""))


# -- slots, in-flight records, marks ---------------------------------------------------------

def test_slots_number_feeders_in_order() -> None:
    old = Slots((("a", 4), ("b", 2)))
    new = Slots((("a", 8), ("b", 1)))
    assert old.total == 6 and new.total == 9
    assert old.locate(5) == (1, 1) and old.locate(6) is None
    assert new.number(1, 0) == 8 and new.number(1, 1) is None and new.number(0, 5) == 5


def _line(key: bytes | None, envelope: list[Any], offset: int, ts: int) -> dict[str, Any]:
    return {**encode_bytes("key", key), **encode_bytes("value", orjson.dumps(envelope)),
            "offset": offset, "timestamp": ts}


class _Message:
    """A consumed record as the repartition decoder reads it."""

    def __init__(self, key: bytes | None, value: bytes, ts: int, offset: int) -> None:
        self._k, self._v, self._ts, self._o = key, value, ts, offset

    def key(self) -> bytes | None:
        return self._k

    def value(self) -> bytes:
        return self._v

    def timestamp(self) -> tuple[int, int]:
        return (1, self._ts)

    def offset(self) -> int:
        return self._o


def test_inflight_records_are_admitted_once_by_the_real_decoder() -> None:
    from processor.graph import TopicEnd
    from processor.runtime.tasks.decode import InputDecoder
    from processor.runtime.tasks.position import UpstreamMarks
    from processor.timeutil.watermark import Clock, UpstreamWatermarks

    keys = [f'"k{i}"'.encode() for i in range(40)]
    # two old partitions of a repartition topic fed by 2 source partitions (slots 0, 1); the
    # same (slot, source offset, seq) appears in both (different keys of one source record);
    # partition 0 holds a replayed copy its old reader had already absorbed, and one re-sent
    # after its first copy (in flight twice), plus watermark reports
    lines: dict[int, list[dict[str, Any]]] = {0: [], 1: []}
    for i, k in enumerate(keys):
        p = partition_for(k, 2)
        lines[p].append(_line(k, [i % 2, 100 + i // 2, 0, {"i": i}], len(lines[p]), 1000 + i))
        if i % 7 == 0:
            lines[p].append(_line(None, [i % 2, 5000 + i], len(lines[p]), 1000 + i))
    absorbed = lines[0][0]
    lines[0].insert(0, {**absorbed, "offset": -1})  # a copy of a record absorbed before the cut
    first = orjson.loads(decode_bytes(absorbed, "value"))
    old_marks = {0: {str(first[0]): [first[1], first[2]]}}
    resent = lines[0][3]
    lines[0].insert(5, resent)  # a replay's copy, in flight twice
    move = redistribute_inflight(lines, 3, 2, lambda x: decode_bytes(x, "key"),
                                 lambda x: decode_bytes(x, "value"))
    assert move.reports_dropped == sum(1 for i in range(40) if i % 7 == 0)
    admitted = []
    for q in range(3):
        marks = UpstreamMarks()
        marks.restore([orjson.dumps(retired_marks(move.retired.get(q, {}), old_marks))])
        end = TopicEnd(f"r{q}", key_format="json", internal=True)
        decoder = InputDecoder(end, None, None, marks, UpstreamWatermarks(2), Clock(),
                               lambda m, e: pytest.fail(str(e)))
        msgs = [_Message(k, v, ts, n) for n, (k, v, ts) in enumerate(move.records.get(q, []))]
        assert all(partition_for(m.key(), 3) == q for m in msgs)
        assert all(orjson.loads(m.value())[0] < 0 for m in msgs)  # retired slots only
        batch = decoder.decode(msgs)
        admitted += [r[1]["i"] for r in batch]
        # per key, the old order (one old partition, in its order)
        for k in {m.key() for m in msgs}:
            seen = [r[1]["i"] for r in batch if r[0] == orjson.loads(k)]
            assert seen == sorted(seen)
    # the absorbed record is not admitted again, the replayed copy once, every other once
    assert sorted(admitted) == sorted(set(range(40)) - {first[3]["i"]})


def test_retired_slots_are_unique_per_old_partition_and_slot() -> None:
    from processor.tools.savepoint_rescale import retired_slot

    seen = {retired_slot(p, s, 6) for p in range(8) for s in range(6)}
    assert len(seen) == 48 and max(seen) < 0


# -- event time ------------------------------------------------------------------------------

def test_merged_source_watermark_is_the_lowest() -> None:
    assert merged_source_time([{"max_ts": 50}, {"max_ts": 30}]) == {"max_ts": 30}
    assert merged_source_time([{"max_ts": 50}, None]) == {"max_ts": NO_WATERMARK}


def test_merged_upstream_watermarks_keep_only_slots_that_still_exist() -> None:
    old = Slots((("a", 4),))
    states = [{"marks": {"0": 10, "1": 20, "2": 30, "3": 5}, "idle": [2], "current": 5},
              {"marks": {"0": 12, "1": 15, "3": 9}, "idle": [], "current": 9}]
    grown = merged_upstream_time(states, old, Slots((("a", 8),)))
    # slot 2 was never heard from by the second state: not set; 4..7 are new: not set
    assert grown == {"marks": {"0": 10, "1": 15, "3": 5}, "idle": [], "current": 5}
    shrunk = merged_upstream_time(states, old, Slots((("a", 3),)))
    assert shrunk == {"marks": {"0": 10, "1": 15}, "idle": [], "current": 5}
    # two feeders: the second's slots are renumbered after the first's new count
    two = merged_upstream_time([{"marks": {"0": 1, "1": 2, "2": 3}, "current": 1}],
                               Slots((("a", 2), ("b", 1))), Slots((("a", 3), ("b", 1))))
    assert two["marks"] == {"0": 1, "1": 2, "3": 3}


# -- the sources' cut ------------------------------------------------------------------------

def _source_manifest(**saved: Any) -> dict[str, Any]:
    return {"source_offsets": {"orders": {"partitions": 2, "committed": {"0": 5, "1": 7},
                                          **saved}}}


def test_a_rescaled_source_must_have_been_read_to_its_end() -> None:
    from processor.tools.savepoint_sources import check_consumed

    with pytest.raises(SavepointError, match=r"does not record its end offsets .* take a new "
                                             r"savepoint to rescale"):
        check_consumed(_source_manifest(), "orders")  # taken before end offsets were recorded
    behind = _source_manifest(topic_id="abc", end_offsets={"0": 5, "1": 9},
                              consumed_to_end={"0": True, "1": False})
    with pytest.raises(SavepointError, match=r"partition 1: committed 7, end 9\): .* Let the "
                                             "workers catch up with the input, then stop them"):
        check_consumed(behind, "orders")
    check_consumed(_source_manifest(topic_id="abc", end_offsets={"0": 5, "1": 9},
                                    consumed_to_end={"0": True, "1": True}), "orders")


def test_only_stream_sources_whose_count_changed_are_rescaled() -> None:
    from processor.graph import build_topology
    from processor.tools.savepoint_sources import rescaled_sources

    topology = build_topology(load_spec_text(TOPOLOGY))
    manifest = {"source_offsets": {"events": {"partitions": 3}, "other": {"partitions": 3}}}
    assert rescaled_sources(manifest, topology, {"events": 8, "other": 3}) == {"events": (3, 8)}
    assert rescaled_sources(manifest, topology, {"events": 3, "other": 3}) == {}


def test_a_rescaled_source_resumes_at_the_cut_only_when_it_is_the_same_topic() -> None:
    from processor.tools.savepoint_sources import resume_offsets

    saved = _source_manifest(topic_id="abc", end_offsets={"0": 5, "1": 9},
                             consumed_to_end={"0": True, "1": True})
    with pytest.raises(SavepointError, match="cannot tell whether source topic 'orders'"):
        resume_offsets(saved, "orders", 2, None, None)  # type: ignore[arg-type]
    # the same topic, the same count of old partitions: each resumes at the savepoint's end
    offsets, same = resume_offsets(saved, "orders", 2, "abc", None)  # type: ignore[arg-type]
    assert same and offsets == {0: 5, 1: 9}


# -- position records of the new partitions --------------------------------------------------

PLAN_TOPOLOGY = """
name: {name}
sources:
  orders: {{topic: orders, key: {{format: string}}, timestamp: {{field: ts}}}}
pipelines:
  - from: orders
    steps:
      - aggregate: {{store: per-order, n: count()}}
  - from: orders
    steps:
      - key_by: "value['user']"
      - window: {{tumbling: 1s, late: drop}}
      - aggregate: {{store: per-user, n: count()}}
"""


def test_new_partitions_get_merged_positions_marks_and_watermarks(tmp_path) -> None:
    from processor.graph import build_topology
    from processor.tools.savepoint_format import SavepointWriter
    from processor.tools.savepoint_rescale_restore import _Plan, savepoint_entries

    new_app = build_topology(load_spec_text(PLAN_TOPOLOGY.format(name="b")))
    user = b'"u1"'  # per-user's key (json after key_by) and the in-flight record's
    order = b"o-7"
    src = partition_for(order, 2)
    root = tmp_path / "sp"
    with SavepointWriter(root) as out:
        out.store_entry("per-order", src, order, b"[1]")
        out.store_entry("per-user", partition_for(user, 2),
                        b"W" + bytes(16) + user, b"[1]")
        out.inflight_record("a-per-user-repartition", 1, 40, user,
                            orjson.dumps([0, 12, 0, {"user": "u1"}]), 5)
        out.inflight_record("a-per-user-repartition", 1, 41, None, orjson.dumps([0, 13]), 5)
        upstream = {str(p): {"position": 40 + p, "upstream": {"0": [11, 0], "1": [9, 0]},
                             "time": {"marks": {"0": 100 + p, "1": 200}, "idle": [1],
                                      "current": 100 + p}} for p in range(2)}
        source = {str(p): {"position": 30 + p, "time": {"max_ts": 500 + p}} for p in range(2)}
        out.commit({"application": "a",
                    "source_offsets": {"orders": {"partitions": 2, "committed": {"0": 30, "1": 31}}},
                    "stores": {"per-order": {"partitions": 2, "position_records": source},
                               "per-user": {"partitions": 2, "position_records": upstream}},
                    "inflight": {"a-per-user-repartition": {"partitions": 2}}})
    manifest = orjson.loads((root / "manifest.json").read_bytes())
    counts = {"orders": 5, "b-per-user-repartition": 5, "b-per-order-changelog": 5,
              "b-per-user-changelog": 5}
    plan = _Plan(root, manifest, new_app, counts, savepoint_entries(root))
    assert plan.inflight[1].reports_dropped == 1
    source_sub, user_sub = new_app.subtopologies[0], new_app.subtopologies[-1]
    q_order, q_user = partition_for(order, 5), partition_for(user, 5)
    records = plan.position_records(source_sub, {q: 1000 + q for q in range(5)}, unchanged=False)
    assert records[q_order]["position"] == 1000 + q_order
    merged = plan.merged(source_sub, q_order)
    assert src in merged and set(merged) <= {src, q_order}
    assert records[q_order]["time"] == {"max_ts": min(500 + p for p in merged)}
    assert all("time" not in records[q] for q in range(2, 5) if q != q_order)  # nothing merged
    records = plan.position_records(user_sub, {q: q for q in range(5)}, unchanged=False)
    rec = records[q_user]
    # the in-flight record's retired slot starts at the old reader's mark of its partition
    assert rec["upstream"] == {str(-1 - (1 * 2 + 0)): [11, 0]}
    merged = plan.merged(user_sub, q_user)
    assert 1 in merged
    assert rec["time"]["marks"] == {"0": min(100 + p for p in merged), "1": 200}
    assert rec["time"]["idle"] == [] and rec["time"]["current"] == min(100 + p for p in merged)
    # an unchanged source keeps the savepoint's records as they are
    assert plan.position_records(source_sub, {}, unchanged=True)[0] == source["0"]
