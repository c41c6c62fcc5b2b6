"""The worker's state memory budget: one number bounds what its stores may hold in memory.

Without it each RocksDB instance (one per store and partition) sizes its own block cache and
memtables, and each operator's write cache holds up to a count of entries whatever their size,
so a worker's memory grows with its partition count and its key count. With it (Flink's managed
memory, Kafka Streams' bounded memory config) the budget is split once per worker:

- a quarter for RocksDB's block cache, shared by every store (index and filter blocks are
  charged to it too, so they stay inside the bound);
- a quarter for memtables, shared through one write buffer manager (a store whose memtable
  would push the total over it is flushed early);
- half for the operators' write caches (the decoded state of recently used keys: the hot tier
  a record reads and updates without touching RocksDB), in bytes as each cache estimates them.
  After every checkpoint the worker trims the largest caches until they fit (`enforce`).

What is not in the budget: the interpreter and libraries, librdkafka's buffers, and the records
of the batch in flight; the README gives that constant as measured.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from rocksdict import BlockBasedOptions, Cache, Options, WriteBufferManager

MIN_BUDGET = 32 * 1024**2  # below this RocksDB's own fixed costs dominate


class WriteCache(Protocol):
    """An operator's cache of decoded state, as the budget sees it."""

    def cache_bytes(self) -> int:
        """Estimated bytes the cache holds (0 when empty)."""
        ...

    def trim_cache(self) -> None:
        """Drop what the store already holds, keeping at most the keys of the last checkpoint."""
        ...


@dataclass(frozen=True)
class MemorySplit:
    block_cache: int
    write_buffers: int
    write_caches: int


def split(budget: int) -> MemorySplit:
    quarter = budget // 4
    return MemorySplit(quarter, quarter, budget - 2 * quarter)


def store_options(memory: StateMemory | None) -> Options:
    """RocksDB options of a store (RocksStore, TableStore): with `memory`, the worker's shared
    cache and write buffers. Bloom filters on SST files and memtables: most lookups of a large
    key space are of keys not stored yet (a key's first record, a customer without a row), and
    a filter answers those without reading a data block (~0.5 -> ~0.25 µs)."""
    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.set_max_background_jobs(2)
    opts.increase_parallelism(2)
    table = BlockBasedOptions()
    table.set_bloom_filter(10, False)
    if memory is not None:
        memory.options(opts, table)
    opts.set_block_based_table_factory(table)
    opts.set_memtable_whole_key_filtering(True)
    opts.set_memtable_prefix_bloom_ratio(0.02)
    return opts


def state_memory(budget: int | None) -> StateMemory | None:
    """The worker's state memory for the `memory_budget` setting (None: unbounded)."""
    return None if budget is None else StateMemory(int(budget))


class StateMemory:
    """The shared RocksDB cache and write buffer manager of a worker, and its write-cache bound."""

    def __init__(self, budget: int) -> None:
        if budget < MIN_BUDGET:
            raise ValueError(f"memory_budget {budget} bytes is below the minimum of {MIN_BUDGET >> 20}MiB")
        self.budget = budget
        self.split = split(budget)
        self.block_cache = Cache(self.split.block_cache)
        self.write_buffers = WriteBufferManager(self.split.write_buffers, False)
        self.trims = 0  # caches trimmed to fit
        self.write_cache_bytes = 0  # the write caches' estimate after the last `enforce`

    def options(self, opts: Options, table: BlockBasedOptions) -> None:
        """Make a store's options draw on the shared cache and write buffers."""
        table.set_block_cache(self.block_cache)
        table.set_cache_index_and_filter_blocks(True)
        table.set_pin_l0_filter_and_index_blocks_in_cache(True)
        opts.set_write_buffer_manager(self.write_buffers)
        # a memtable may take at most half the shared allowance before it is flushed
        opts.set_write_buffer_size(min(64 * 1024**2, max(4 * 1024**2, self.split.write_buffers // 2)))

    def enforce(self, caches: Iterable[WriteCache]) -> int:
        """Trim the largest write caches until all fit in their share; returns the bytes held."""
        sized = sorted(((c.cache_bytes(), i, c) for i, c in enumerate(caches)), reverse=True,
                       key=lambda e: (e[0], e[1]))
        total = sum(size for size, _, _ in sized)
        allowance = self.split.write_caches
        for size, _, cache in sized:
            if total <= allowance:
                break
            cache.trim_cache()
            self.trims += 1
            total += cache.cache_bytes() - size
        self.write_cache_bytes = total
        return total

    def usage(self) -> dict[str, int]:
        """Bytes in use per part of the budget (RocksDB's own counts, the caches' estimate)."""
        return {"block_cache": self.block_cache.get_usage(),
                "memtables": self.write_buffers.get_usage(),
                "write_caches": self.write_cache_bytes}
