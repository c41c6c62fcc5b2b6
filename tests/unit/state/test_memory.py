"""The worker's state memory budget (state/memory.py) over real RocksDB stores and real
aggregate operators: one shared block cache and write buffer manager, and write caches
trimmed to their share without changing any result."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from pydantic import ValidationError

from processor.operators.aggregate import Aggregate, compile_aggregation, parse_field
from processor.runtime.config import WorkerConfig
from processor.state import RocksStore
from processor.state.memory import MIN_BUDGET, StateMemory, split, state_memory

MiB = 1024**2


def test_the_budget_splits_into_block_cache_memtables_and_write_caches() -> None:
    parts = split(512 * MiB)
    assert (parts.block_cache, parts.write_buffers, parts.write_caches) == (128 * MiB, 128 * MiB,
                                                                              256 * MiB)
    assert sum((parts.block_cache, parts.write_buffers, parts.write_caches)) == 512 * MiB
    assert state_memory(None) is None
    with pytest.raises(ValueError, match="below the minimum"):
        StateMemory(MIN_BUDGET - 1)


def test_memory_budget_setting_takes_sizes_and_refuses_a_tiny_one() -> None:
    assert WorkerConfig().memory_budget == 512 * MiB
    assert WorkerConfig(memory_budget="1.5GiB").memory_budget == 1536 * MiB
    assert WorkerConfig(memory_budget="300MB").memory_budget == 300_000_000
    assert WorkerConfig(memory_budget=None).memory_budget is None
    with pytest.raises(ValidationError, match="memory_budget"):
        WorkerConfig(memory_budget="10MiB")
    with pytest.raises(ValidationError, match="memory_budget"):
        WorkerConfig(memory_budget="lots")


def _fill(store: RocksStore, prefix: bytes, n: int, size: int) -> None:
    for start in range(0, n, 5000):
        store.apply({prefix + b"%08d" % i: b"v" * size for i in range(start, min(n, start + 5000))}, {})


def test_stores_share_one_write_buffer_manager_that_bounds_their_memtables(tmp_path: Path) -> None:
    # 2 stores x 24 MiB written; the budget's memtable share is 8 MiB
    memory = StateMemory(32 * MiB)
    bounded = [RocksStore(tmp_path / f"b{i}", memory=memory) for i in range(2)]
    free = [RocksStore(tmp_path / f"f{i}") for i in range(2)]
    for i, (b, f) in enumerate(zip(bounded, free, strict=True)):
        _fill(b, b"k%d" % i, 24_000, 1000)
        _fill(f, b"k%d" % i, 24_000, 1000)
    unbounded = sum(f._db.property_int_value("rocksdb.cur-size-all-mem-tables") for f in free)
    shared = sum(b._db.property_int_value("rocksdb.cur-size-all-mem-tables") for b in bounded)
    assert unbounded > 40 * MiB  # each store kept its 24 MiB in memtables
    assert memory.write_buffers.get_usage() == pytest.approx(shared, rel=0.25)
    assert shared < 2 * memory.split.write_buffers  # flushed early: a fraction of the above
    # every entry is still there, from memtables and SST files alike
    for i, b in enumerate(bounded):
        assert b.get(b"k%d%08d" % (i, 0)) == b"v" * 1000
        assert b.get(b"k%d%08d" % (i, 23_999)) == b"v" * 1000
        assert sum(1 for _ in b.items()) == 24_000
    for s in bounded + free:
        s.close()


def test_reads_fill_one_block_cache_for_all_stores_within_its_share(tmp_path: Path) -> None:
    memory = StateMemory(32 * MiB)
    stores = [RocksStore(tmp_path / f"s{i}", memory=memory) for i in range(2)]
    for i, s in enumerate(stores):
        _fill(s, b"k%d" % i, 20_000, 1000)
        s._db.flush()
    before = memory.block_cache.get_usage()
    for i in range(0, 3000, 7):
        assert stores[0].get(b"k0%08d" % i) is not None
    after_one = memory.block_cache.get_usage()
    for i in range(0, 3000, 7):
        assert stores[1].get(b"k1%08d" % i) is not None
    after_both = memory.block_cache.get_usage()
    assert before < after_one < after_both  # one cache, charged by both stores' reads
    for i, s in enumerate(stores):  # 40 MB of data blocks read through an 8 MiB cache
        assert all(s.get(b"k%d%08d" % (i, k)) is not None for k in range(0, 20_000, 3))
    assert memory.block_cache.get_usage() <= memory.split.block_cache * 1.05  # LRU-evicted
    assert memory.usage()["block_cache"] == memory.block_cache.get_usage()
    for s in stores:
        s.close()


def _aggregate(path: Path, memory: StateMemory | None) -> tuple[Aggregate, RocksStore]:
    agg = compile_aggregation([parse_field("n", "count()"), parse_field("total", "sum(value['x'])"),
                               parse_field("last", "last(value['tag'])")])
    store = RocksStore(path, memory=memory)
    op = Aggregate("agg", "totals", agg, lambda k: k.encode(), "on_checkpoint", 2**62)
    op.bind(store)
    return op, store


def test_write_caches_are_trimmed_to_their_share_and_results_do_not_change(tmp_path: Path) -> None:
    """Three partitions' aggregates over 150k keys (~30 MiB of cached state against a 16 MiB
    share): after each checkpoint the budget trims the largest caches; every emitted result
    and every stored accumulator equals an unbudgeted run's."""
    memory = StateMemory(32 * MiB)
    rng = random.Random(7)
    parts = [[(f"u{p}-{rng.randrange(50_000)}", {"x": rng.randrange(100), "tag": rng.choice("abc")},
               i, i) for i in range(60_000)] for p in range(3)]
    budgeted = [_aggregate(tmp_path / f"b{p}", memory) for p in range(3)]
    free = [_aggregate(tmp_path / f"f{p}", None) for p in range(3)]
    held = []
    for start in range(0, 60_000, 4000):
        for (ops, run_memory) in ((budgeted, memory), (free, None)):
            outs = []
            for p, (op, store) in enumerate(ops):
                op.process(parts[p][start:start + 4000])
                emits, writes = op.flush()
                store.apply(writes, {})
                op.committed()
                outs.append(emits)
            if run_memory is not None:
                held.append(run_memory.enforce([op for op, _ in ops]))
                assert held[-1] <= memory.split.write_caches
                got = outs
            else:
                assert outs == got  # the same results, in the same order
    assert memory.trims > 0 and max(held) > memory.split.write_caches // 2
    # a trim keeps what the last checkpoint wrote (the keys likeliest to come again) unless
    # that is more than half the cache
    op = budgeted[0][0]
    op.process(parts[0][:3000])
    op.flush()
    cached = set(op.cache)
    assert op.recent and op.recent <= cached and 2 * len(op.recent) <= len(cached)
    op.trim_cache()
    assert set(op.cache) == op.recent
    for (_, bs), (_, fs) in zip(budgeted, free, strict=True):
        assert dict(bs.items()) == dict(fs.items())
        bs.close()
        fs.close()


def test_cached_json_keys_hold_just_their_bytes(tmp_path: Path) -> None:
    """orjson's bytes keep a 4 KiB buffer each: a store's key encoder copies them, or every
    cached key of a JSON-keyed aggregate would cost 4 KiB (against ~250 bytes an entry)."""
    from processor.serde import serde_for, state_key_serde
    from tests.traced import traced_bytes

    raw = serde_for("json").encode
    assert state_key_serde("json").encode({"user": "u1"}) == raw({"user": "u1"})
    assert state_key_serde("json").encode(None) is None
    assert state_key_serde("json").encode(7) == b"7"
    agg = compile_aggregation([parse_field("n", "count()")])
    store = RocksStore(tmp_path / "s")
    per_key = {}
    for name, encode in (("orjson", raw), ("state", state_key_serde("json").encode)):
        op = Aggregate("agg", "totals", agg, encode, "on_checkpoint", 2**62)
        op.bind(store)
        batch = [({"user": f"u{i}"}, {"x": 1}, i, i) for i in range(5000)]
        with traced_bytes() as kept:
            op.process(batch)
            per_key[name] = kept() / 5000
    assert per_key["orjson"] > 4096  # the cost without the copy (cache and dirty keys)
    assert per_key["state"] < 600, per_key
    store.close()
