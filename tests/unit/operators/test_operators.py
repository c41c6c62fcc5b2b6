"""Operators over batches of (key, value, timestamp, offset) tuples; aggregates over a real RocksStore."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from processor.examples.revenue import revenue_oracle, sample_orders
from processor.expressions import compile_expression
from processor.graph import BuildContext, TopicEnd, build_topology
from processor.operators import (
    Aggregate,
    Filter,
    FlatMap,
    KeyBy,
    MapValue,
    PythonStep,
    Sink,
    StepFailed,
    compile_aggregation,
    parse_field,
)
from processor.serde import serde_for
from processor.spec import load_spec
from processor.spec.steps import PythonReducer
from processor.state import RocksStore
from tests.paths import REPO

MODULE = "tests.unit.operators.test_operators"


# -- python functions referenced by `module:function` ----------------------------------------


def reduce_stats(acc: dict[str, Any], key: Any, value: dict[str, Any]) -> dict[str, Any]:
    """A reducer that returns a new accumulator: count, and the last three tags seen."""
    return {"n": acc["n"] + 1, "tags": [*acc["tags"], value["c"]][-3:]}


def append_x(acc: list[Any], key: Any, value: dict[str, Any]) -> list[Any]:
    """A reducer that mutates its accumulator in place."""
    acc.append(value["x"])
    return acc


def split_words(key: Any, value: Any):
    if value is None:
        return None
    return [(word, len(word)) for word in value.split()]


# -- helpers ---------------------------------------------------------------------------------


def rec(key: Any, value: Any, ts: int = 0, offset: int = 0) -> tuple[Any, Any, int, int]:
    return (key, value, ts, offset)


def fn(source: str):
    return compile_expression(source)


@pytest.fixture
def store(tmp_path):
    s = RocksStore(tmp_path / "store")
    yield s
    s.close()


def make_aggregate(fields: dict[str, Any], emit: str = "on_checkpoint", key_format: str = "string",
                   name: str = "pipelines[0].steps[1]") -> Aggregate:
    agg = compile_aggregation([parse_field(n, spec) for n, spec in fields.items()])
    return Aggregate(name, "s", agg, serde_for(key_format).encode, emit)


# -- stateless operators ---------------------------------------------------------------------


def test_filter_keeps_truthy_records_in_order():
    batch = [rec("a", {"n": i}, ts=100 + i, offset=i) for i in range(6)]
    out = Filter("f", fn("value['n'] % 2 == 0")).process(batch)
    assert out == [batch[0], batch[2], batch[4]]
    assert Filter("f", fn("key == 'zz'")).process(batch) == []
    assert Filter("f", fn("True")).process([]) == []


def test_filter_sees_key_and_timestamp():
    batch = [rec("a", 1, 10, 0), rec("b", 1, 20, 1), rec("a", 1, 30, 2)]
    assert Filter("f", fn("key == 'a' and timestamp > 15")).process(batch) == [batch[2]]


def test_map_value_replaces_value_keeps_key_ts_offset():
    batch = [rec("k1", {"a": 1}, 5, 10), rec("k2", {"a": 2}, 6, 11)]
    out = MapValue("m", fn("{'double': value['a'] * 2, 'k': key, 't': timestamp}")).process(batch)
    assert out == [
        ("k1", {"double": 2, "k": "k1", "t": 5}, 5, 10),
        ("k2", {"double": 4, "k": "k2", "t": 6}, 6, 11),
    ]


def test_flat_map_expands_and_keeps_coordinates():
    batch = [rec("a", [1, 2, 3], 7, 0), rec("b", [], 8, 1), rec("c", None, 9, 2), rec("d", (4,), 10, 3)]
    out = FlatMap("fm", fn("value")).process(batch)
    assert out == [("a", 1, 7, 0), ("a", 2, 7, 0), ("a", 3, 7, 0), ("d", 4, 10, 3)]


def test_flat_map_rejects_string_result_naming_the_record():
    batch = [rec("a", [1], 0, 0), rec("b", "oops", 0, 1), rec("c", [2], 0, 2)]
    with pytest.raises(StepFailed) as info:
        FlatMap("fm", fn("value")).process(batch)
    assert info.value.record == batch[1]
    assert isinstance(info.value.cause, TypeError)
    assert "flat_map must return a list" in str(info.value)


def test_key_by_sets_key_keeps_value():
    batch = [rec("o1", {"user": "u1"}, 1, 0), rec("o2", {"user": "u2"}, 2, 1)]
    out = KeyBy("kb", fn("value['user']")).process(batch)
    assert out == [("u1", {"user": "u1"}, 1, 0), ("u2", {"user": "u2"}, 2, 1)]


def test_python_step_emits_pairs_and_drops_on_none():
    batch = [rec("k", "hello big world", 3, 0), rec("k", None, 4, 1), rec("k", "", 5, 2), rec("k", "x", 6, 3)]
    out = PythonStep("py", split_words).process(batch)
    assert out == [("hello", 5, 3, 0), ("big", 3, 3, 0), ("world", 5, 3, 0), ("x", 1, 6, 3)]


def test_python_step_bad_pair_fails_on_that_record():
    batch = [rec("a", 1, 0, 0), rec("b", 2, 0, 1)]

    def bad(key, value):
        return [(key, value)] if value == 1 else [(key, value, "extra")]

    with pytest.raises(StepFailed) as info:
        PythonStep("py", bad).process(batch)
    assert info.value.record == batch[1]
    assert isinstance(info.value.cause, ValueError)


@pytest.mark.parametrize("bad_index", [0, 3, 7])
@pytest.mark.parametrize(
    "make_op",
    [
        lambda: Filter("pipelines[0].steps[0]", fn("value['n'] > 0")),
        lambda: MapValue("pipelines[0].steps[0]", fn("value['n'] * 2")),
        lambda: FlatMap("pipelines[0].steps[0]", fn("[value['n']]")),
        lambda: KeyBy("pipelines[0].steps[0]", fn("value['n']")),
    ],
    ids=["filter", "map", "flat_map", "key_by"],
)
def test_stateless_failure_names_the_exact_failing_record(make_op, bad_index):
    batch = [rec(f"k{i}", {"n": i + 1}, 1000 + i, 50 + i) for i in range(8)]
    batch[bad_index] = rec("bad", {"m": 0}, 9999, 50 + bad_index)
    with pytest.raises(StepFailed) as info:
        make_op().process(batch)
    exc = info.value
    assert exc.record == batch[bad_index]
    assert exc.record[3] == 50 + bad_index
    assert exc.step == "pipelines[0].steps[0]"
    assert isinstance(exc.cause, KeyError)
    assert str(exc) == "KeyError: 'n'"


def test_sink_emits_batch_and_passes_it_on():
    emitted: list = []
    sink = Sink("to", "out", emitted.append)
    batch = [rec("a", 1), rec("b", 2)]
    assert sink.process(batch) is batch
    assert sink.process([]) == []
    assert emitted == [batch]  # an empty batch is not emitted
    assert sink.topic == "out"


# -- aggregate: oracle over random data -------------------------------------------------------

ALL_FIELDS: dict[str, Any] = {
    "n": "count()",
    "nx": "count(value.get('x'))",
    "total": "sum(value.get('x'))",
    "lo": "min(value.get('x'))",
    "hi": "max(value.get('x'))",
    "mean": "avg(value.get('x'))",
    "first_c": "first(value['c'])",
    "last_c": "last(value['c'])",
    "first_x": "first(value.get('x'))",
    "stats": PythonReducer(python=f"{MODULE}:reduce_stats", initial={"n": 0, "tags": []}),
}


def random_records(seed: int, n: int = 600, keys: int = 7) -> list[tuple[Any, Any, int, int]]:
    rng = random.Random(seed)
    out = []
    for offset in range(n):
        key = f"k{rng.randrange(keys)}"
        roll = rng.random()
        if roll < 0.05:
            value = None  # tombstone
        else:
            value = {"c": rng.choice("abcdef")}
            if roll > 0.15:  # ~10% of records have no x
                value["x"] = rng.randint(-50, 100) if rng.random() < 0.5 else rng.randint(-200, 400) / 4
        out.append((key, value, 1_700_000_000_000 + offset * 3, offset))
    return out


def oracle(records) -> dict[Any, dict[str, Any]]:
    """Brute force: per key, recompute every field from the list of that key's values."""
    per_key: dict[Any, list[dict]] = {}
    for k, v, _, _ in records:
        if v is not None:
            per_key.setdefault(k, []).append(v)
    result = {}
    for k, values in per_key.items():
        xs = [v["x"] for v in values if v.get("x") is not None]
        stats = {"n": 0, "tags": []}
        for v in values:
            stats = reduce_stats(stats, k, v)
        result[k] = {
            "n": len(values),
            "nx": len(xs),
            "total": sum(xs),
            "lo": min(xs) if xs else None,
            "hi": max(xs) if xs else None,
            "mean": sum(xs) / len(xs) if xs else None,
            "first_c": values[0]["c"],
            "last_c": values[-1]["c"],
            "first_x": values[0].get("x"),
            "stats": stats,
        }
    return result


def random_batches(records, rng: random.Random):
    i = 0
    while i < len(records):
        size = rng.randint(1, 60)
        yield records[i:i + size]
        i += size


def assert_results_equal(actual: dict, expected: dict):
    assert actual.keys() == expected.keys()
    for k in expected:
        a, e = actual[k], expected[k]
        assert a.keys() == e.keys()
        for name in e:
            if isinstance(e[name], float):
                assert a[name] == pytest.approx(e[name], rel=1e-12), (k, name)
            else:
                assert a[name] == e[name], (k, name)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_aggregate_on_checkpoint_matches_oracle(store, seed):
    records = random_records(seed)
    rng = random.Random(seed * 101)
    agg = make_aggregate(ALL_FIELDS)
    agg.bind(store)
    latest: dict[Any, dict] = {}
    seen: list = []
    for batch in random_batches(records, rng):
        assert agg.process(batch) == []  # on_checkpoint emits nothing per record
        seen.extend(batch)
        if rng.random() < 0.3:
            continue  # several batches between checkpoints
        emits, writes = agg.flush()
        # exactly the keys that got a non-tombstone record since the last flush, once each
        dirty = {}
        for r in seen:
            if r[1] is not None:
                dirty[r[0]] = r
        # ... in the order of their latest source offset (what a repartition downstream needs)
        assert [e[0] for e in emits] == sorted(dirty, key=lambda k: dirty[k][3])
        assert set(writes) == {k.encode() for k in dirty}
        for k, result, ts, offset in emits:
            assert (ts, offset) == (dirty[k][2], dirty[k][3])  # coordinates of the latest record
            latest[k] = result
        seen = []
        store.apply(writes, {"position": batch[-1][3] + 1})
        agg.committed()
    emits, writes = agg.flush()
    latest.update({k: r for k, r, _, _ in emits})
    assert_results_equal(latest, oracle(records))


@pytest.mark.parametrize("seed", [4, 5])
def test_aggregate_every_record_matches_running_oracle(store, seed):
    records = random_records(seed, n=300, keys=4)
    agg = make_aggregate(ALL_FIELDS, emit="every_record")
    agg.bind(store)
    out = []
    for batch in random_batches(records, random.Random(seed)):
        out.extend(agg.process(batch))
    live = [r for r in records if r[1] is not None]
    assert len(out) == len(live)  # one output per input record (tombstones excluded)
    for i, (record, emitted) in enumerate(zip(live, out, strict=True)):
        assert emitted[0] == record[0]
        assert (emitted[2], emitted[3]) == (record[2], record[3])
        prefix = [r for r in live[: i + 1] if r[0] == record[0]]
        assert_results_equal({record[0]: emitted[1]}, {record[0]: oracle(prefix)[record[0]]})
    emits, writes = agg.flush()
    assert emits == []  # every_record already emitted everything
    assert set(writes) == {r[0].encode() for r in live}


def test_aggregate_every_record_emits_one_running_result_per_input(store):
    agg = make_aggregate({"n": "count()", "s": "sum(value)"}, emit="every_record")
    agg.bind(store)
    out = agg.process([rec("a", 1, 10, 0), rec("b", 5, 11, 1), rec("a", 2, 12, 2), rec("a", 3, 13, 3)])
    assert out == [
        ("a", {"n": 1, "s": 1}, 10, 0),
        ("b", {"n": 1, "s": 5}, 11, 1),
        ("a", {"n": 2, "s": 3}, 12, 2),
        ("a", {"n": 3, "s": 6}, 13, 3),
    ]


def test_aggregate_on_checkpoint_emits_latest_per_dirty_key_only(store):
    agg = make_aggregate({"n": "count()", "s": "sum(value)"})
    agg.bind(store)
    assert agg.process([rec("a", 1, 10, 0), rec("b", 5, 11, 1), rec("a", 2, 12, 2)]) == []
    emits, _ = agg.flush()
    assert sorted(emits) == [("a", {"n": 2, "s": 3}, 12, 2), ("b", {"n": 1, "s": 5}, 11, 1)]
    # only `a` changes in the next interval
    agg.process([rec("a", 10, 20, 3)])
    emits, writes = agg.flush()
    assert emits == [("a", {"n": 3, "s": 13}, 20, 3)]
    assert list(writes) == [b"a"]
    # nothing changed: nothing to emit or write
    assert agg.flush() == ([], {})


def test_tombstones_are_ignored(store):
    agg = make_aggregate({"n": "count()", "last": "last(value)"})
    agg.bind(store)
    agg.process([rec("a", None, 0, 0), rec("b", None, 0, 1)])
    assert agg.flush() == ([], {})
    agg.process([rec("a", "x", 0, 2), rec("a", None, 0, 3)])
    emits, _ = agg.flush()
    assert emits == [("a", {"n": 1, "last": "x"}, 0, 2)]


def test_skip_below_skips_offsets_already_in_state(store):
    agg = make_aggregate({"n": "count()", "offsets": "last(timestamp)"}, emit="every_record")
    agg.bind(store, skip_below=5)
    out = agg.process([rec("a", 1, offset=o, ts=o) for o in range(3, 8)])
    assert [o for _, _, _, o in out] == [5, 6, 7]
    assert [r["n"] for _, r, _, _ in out] == [1, 2, 3]


def test_aggregate_failure_names_the_failing_record(store):
    agg = make_aggregate({"s": "sum(value['x'])"})
    agg.bind(store)
    batch = [rec("a", {"x": 1}, 0, 10), rec("b", {"x": 2}, 0, 11), rec("a", {"y": 3}, 0, 12)]
    with pytest.raises(StepFailed) as info:
        agg.process(batch)
    assert info.value.record == batch[2]
    assert info.value.step == "pipelines[0].steps[1]"
    assert isinstance(info.value.cause, KeyError)


def test_python_reducer_initial_is_not_shared_between_keys(store):
    fields = {"xs": PythonReducer(python=f"{MODULE}:append_x", initial=[])}
    agg = make_aggregate(fields)
    agg.bind(store)
    agg.process([rec("a", {"x": 1}), rec("b", {"x": 2}), rec("a", {"x": 3})])
    emits, _ = agg.flush()
    assert dict((k, r) for k, r, _, _ in emits) == {"a": {"xs": [1, 3]}, "b": {"xs": [2]}}
    assert agg.agg.initial == [[]]


def test_every_record_results_are_snapshots_with_mutating_reducer(store):
    fields = {"xs": PythonReducer(python=f"{MODULE}:append_x", initial=[])}
    agg = make_aggregate(fields, emit="every_record")
    agg.bind(store)
    out = agg.process([rec("a", {"x": 1}, 0, 0), rec("a", {"x": 2}, 0, 1)])
    assert [r["xs"] for _, r, _, _ in out] == [[1], [1, 2]]


def test_json_key_format_accepts_non_string_keys(store):
    agg = make_aggregate({"n": "count()"}, key_format="json")
    agg.bind(store)
    agg.process([rec(1, "x"), rec([1, "a"], "y"), rec(1, "z")])
    emits, writes = agg.flush()
    assert sorted((str(k), r["n"]) for k, r, _, _ in emits) == [("1", 2), ("[1, 'a']", 1)]
    assert set(writes) == {b"1", b'[1,"a"]'}


# -- flush writes, state round trip -----------------------------------------------------------


def test_flush_writes_are_json_encoded_accumulators(store):
    agg = make_aggregate({"n": "count()", "s": "sum(value)", "m": "avg(value)"})
    agg.bind(store)
    agg.process([rec("a", 2), rec("a", 4), rec("b", 10)])
    emits, writes = agg.flush()
    assert set(writes) == {b"a", b"b"}
    decoded = {k: orjson.loads(v) for k, v in writes.items()}
    assert all(isinstance(v, list) for v in decoded.values())
    assert decoded[b"a"] == [2, 6, 6, 2]  # count | sum | avg (sum, n)
    for k, result, _, _ in emits:
        assert agg.agg.result(decoded[k.encode()]) == result
    assert dict((k, r) for k, r, _, _ in emits) == {"a": {"n": 2, "s": 6, "m": 3.0},
                                                     "b": {"n": 1, "s": 10, "m": 10.0}}


def test_state_round_trips_through_rocks_store(tmp_path):
    records = random_records(seed=9, n=500, keys=5)
    half = 260
    path = tmp_path / "topo" / "s" / "0"

    store = RocksStore(path)
    first = make_aggregate(ALL_FIELDS)
    first.bind(store)
    first.process(records[:half])
    _, writes = first.flush()
    assert writes
    store.apply(writes, {"position": half, "changelog_offset": 17})
    store.close()

    # a new task on the same directory: reopen, bind, replay the input from the beginning
    store = RocksStore(path)
    try:
        assert store.position == half
        assert {k for k, _ in store.items()} == set(writes)
        second = make_aggregate(ALL_FIELDS)
        second.bind(store, skip_below=store.position)
        for batch in random_batches(records, random.Random(3)):
            second.process(batch)
        emits, _ = second.flush()
    finally:
        store.close()
    # keys touched only in the first half are not re-emitted; the rest are complete
    expected = oracle(records)
    touched_later = {r[0] for r in records[half:] if r[1] is not None}
    assert {k for k, _, _, _ in emits} == touched_later
    assert_results_equal({k: r for k, r, _, _ in emits}, {k: expected[k] for k in touched_later})


def test_new_aggregate_continues_from_store_contents(store):
    first = make_aggregate({"n": "count()", "hi": "max(value)", "f": "first(value)"})
    first.bind(store)
    first.process([rec("a", 5, 0, 0), rec("a", 9, 0, 1)])
    _, writes = first.flush()
    store.apply(writes, {"position": 2})

    second = make_aggregate({"n": "count()", "hi": "max(value)", "f": "first(value)"})
    second.bind(store, skip_below=2)
    second.process([rec("a", 7, 0, 2), rec("b", 1, 0, 3)])
    emits, _ = second.flush()
    assert sorted(emits) == [("a", {"n": 3, "hi": 9, "f": 5}, 0, 2), ("b", {"n": 1, "hi": 1, "f": 1}, 0, 3)]


def test_discard_forgets_uncommitted_work(store):
    agg = make_aggregate({"n": "count()"})
    agg.bind(store)
    agg.process([rec("a", 1), rec("a", 1)])
    agg.discard()
    assert agg.flush() == ([], {})
    agg.process([rec("a", 1)])
    emits, _ = agg.flush()
    assert emits[0][1] == {"n": 1}  # the discarded updates never reached the store


def test_committed_trims_cache_above_limit(store):
    agg = Aggregate("a", "s", compile_aggregation([parse_field("n", "count()")]),
                    serde_for("string").encode, cache_max_entries=2)
    agg.bind(store)
    agg.process([rec(k, 1) for k in "abc"])
    _, writes = agg.flush()
    store.apply(writes, {})
    agg.committed()
    assert agg.cache == {}
    agg.process([rec("a", 1)])
    emits, _ = agg.flush()
    assert emits[0][1] == {"n": 2}  # re-read from the store after the trim


# -- the shipped revenue topology, end to end without Kafka ------------------------------------


def test_revenue_topology_matches_sample_oracle(tmp_path):

    root = REPO
    topo = build_topology(load_spec(root / "topologies" / "revenue_per_user.yaml"))
    outputs: dict[str, list] = {}

    def emitter_for(end: TopicEnd, *_task_partition: int):
        return outputs.setdefault(end.topic, []).extend

    ctx = BuildContext(emitter_for=emitter_for)
    (upstream,) = topo.subtopologies[0].build_chains(ctx)[0]
    (downstream,) = topo.subtopologies[1].build_chains(ctx)[0]
    agg = downstream[0]
    assert isinstance(agg, Aggregate)
    store = RocksStore(tmp_path / "totals")
    agg.bind(store)

    orders = list(sample_orders(3000, users=40, seed=11))
    records = [(k, v, v["ts"], i) for i, (k, v) in enumerate(orders)]
    repartition = "revenue-per-user-totals-repartition"
    try:
        for start in range(0, len(records), 250):
            batch = records[start:start + 250]
            for op in upstream:
                batch = op.process(batch)
            rekeyed = list(outputs.get(repartition, []))
            outputs.get(repartition, []).clear()
            assert rekeyed == batch
            for op in downstream:  # the aggregate swallows records until the checkpoint
                rekeyed = op.process(rekeyed)
                if not rekeyed:
                    break
            emits, writes = agg.flush()  # checkpoint: emit and continue down the chain
            for op in downstream[1:]:
                emits = op.process(emits)
            store.apply(writes, {"position": start + 250})
            agg.committed()
    finally:
        store.close()

    final = {k: v for k, v, _, _ in outputs["revenue-per-user"]}
    assert final == revenue_oracle(orders)


def test_checkpoint_emits_come_in_source_offset_order(store):
    """A repartition downstream drops records whose source offset goes backwards."""
    agg = Aggregate("agg", "s", compile_aggregation([parse_field("n", "count()")]),
                    lambda k: k.encode())
    agg.bind(store)
    agg.process([("a", {}, 1, 10), ("b", {}, 1, 11), ("c", {}, 1, 12), ("a", {}, 1, 13)])
    emits, _ = agg.flush()
    assert [(k, o) for k, _, _, o in emits] == [("b", 11), ("c", 12), ("a", 13)]
