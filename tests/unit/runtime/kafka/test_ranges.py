"""Resolving a bounded source's range from the broker's offsets (runtime/kafka/ranges.py):
the rules without a broker (tests/integration/test_bounded_ranges.py asks a real one)."""

from __future__ import annotations

import pytest

from processor.errors import ProcessorError
from processor.runtime.kafka.ranges import (
    PartitionOffsets,
    PartitionRange,
    check_partitions,
    compute_ranges,
)
from processor.spec.bounded import Bound, BoundedSpec

# partition 0: log start 0, end 100; partition 1: log start 20 (older records deleted), end 50
OFFSETS = PartitionOffsets(earliest={0: 0, 1: 20}, latest={0: 100, 1: 50})


def test_default_range_is_earliest_to_latest():
    assert compute_ranges(BoundedSpec(), OFFSETS, {}) == {
        0: PartitionRange(0, 100), 1: PartitionRange(20, 50)}


def test_offsets_for_named_partitions_others_earliest_and_latest():
    spec = BoundedSpec(start=Bound(offsets={0: 10}), end=Bound(offsets={1: 30}))
    assert compute_ranges(spec, OFFSETS, {}) == {
        0: PartitionRange(10, 100), 1: PartitionRange(20, 30)}


def test_offsets_are_clamped_to_the_log_and_an_end_below_the_start_is_empty():
    spec = BoundedSpec(start=Bound(offsets={0: 60, 1: 5}), end=Bound(offsets={0: 40, 1: 500}))
    ranges = compute_ranges(spec, OFFSETS, {})
    assert ranges == {0: PartitionRange(60, 60), 1: PartitionRange(20, 50)}
    assert ranges[0].empty and not ranges[1].empty


def test_timestamps_use_the_first_offset_at_or_after_and_none_means_the_end():
    spec = BoundedSpec(start=Bound(timestamp=1_000), end=Bound(timestamp=2_000))
    at_time = {1_000: {0: 5, 1: 25}, 2_000: {0: 70, 1: -1}}
    assert compute_ranges(spec, OFFSETS, at_time) == {
        0: PartitionRange(5, 70), 1: PartitionRange(25, 50)}


def test_a_start_with_no_record_at_or_after_it_gives_an_empty_range():
    spec = BoundedSpec(start=Bound(timestamp=9_000))
    assert compute_ranges(spec, OFFSETS, {9_000: {0: -1, 1: -1}}) == {
        0: PartitionRange(100, 100), 1: PartitionRange(50, 50)}


def test_offsets_naming_a_partition_the_topic_lacks_is_a_precise_error():
    spec = BoundedSpec(end=Bound(offsets={0: 5, 3: 7, 4: 1}))
    with pytest.raises(ProcessorError) as exc:
        check_partitions("orders", spec, [0, 1])
    assert str(exc.value) == ("source 'orders': bounded.end.offsets names partitions 3, 4, but "
                              "its topic has 2 (0-1)")
    check_partitions("orders", BoundedSpec(start=Bound(offsets={1: 0})), [0, 1])
