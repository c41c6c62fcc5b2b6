"""Watermark trackers, the operator clock, time-sortable keys and position records with time."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processor.state import decode_position, encode_position
from processor.state.keys import pack_ts, unpack_ts
from processor.state.store import META_POSITION, META_TIME, META_UPSTREAM, RocksStore
from processor.timeutil.timestamps import iso_to_ms
from processor.timeutil.watermark import (
    NO_WATERMARK,
    Clock,
    PartitionWatermark,
    UpstreamWatermarks,
)


def test_partition_watermark_is_max_seen_minus_delay_before_each_record():
    wm = PartitionWatermark(100)
    assert wm.current == NO_WATERMARK
    before = wm.observe([1000, 900, 1500, 1200])
    assert before == [NO_WATERMARK, 900, 900, 1400]
    assert wm.current == 1400
    assert wm.observe([1300]) == [1400]  # never goes back


@given(st.lists(st.integers(-10**12, 10**12), max_size=50), st.integers(0, 10**6))
def test_partition_watermark_matches_prefix_max(times, delay):
    wm = PartitionWatermark(delay)
    before = wm.observe(times)
    for i in range(len(times)):
        want = max(times[:i]) - delay if i else NO_WATERMARK
        assert before[i] == want


def test_partition_watermark_state_roundtrip_keeps_the_higher_mark():
    a = PartitionWatermark(0)
    a.observe([5000])
    b = PartitionWatermark(0)
    b.observe([7000])
    b.restore(a.state())
    assert b.current == 7000
    c = PartitionWatermark(0)
    c.restore(orjson.loads(orjson.dumps(a.state())))
    assert c.current == 5000


def test_upstream_watermark_is_min_over_reporting_partitions_and_waits_for_all():
    up = UpstreamWatermarks(3)
    assert up.report(0, 500) == NO_WATERMARK  # 1 and 2 never reported: their records may come
    assert up.report(1, 300) == NO_WATERMARK
    assert up.report(2, 400) == 300
    assert up.report(1, 900) == 400
    assert up.report(1, 100) == 400  # a lower report (replay after a crash) changes nothing


def test_idle_upstream_partition_stops_holding_back_and_rejoins_when_active():
    up = UpstreamWatermarks(2)
    up.report(0, 1000)
    assert up.current == NO_WATERMARK
    assert up.report(1, None) == 1000  # partition 1 idle: only 0 counts
    assert up.report(0, 2000) == 2000
    assert up.report(1, 1500) == 2000  # active again, behind: the watermark does not go back
    assert up.report(0, 3000) == 2000
    assert up.report(1, 2500) == 2500
    up.report(0, None)
    up.report(1, None)
    assert up.all_idle and up.current == 3000  # nothing holds partition 0's 3000 back now


def test_the_order_in_which_upstream_partitions_go_idle_does_not_matter():
    """Found in CI: two partitions with data and two silent ones went idle in one tick, the
    busy ones first; the downstream watermark stayed at NO_WATERMARK and no window closed."""
    for order in ([0, 1, 2, 3], [2, 3, 0, 1], [0, 2, 1, 3], [3, 1, 2, 0]):
        up = UpstreamWatermarks(4)
        up.report(0, 5000)
        up.report(1, 7000)
        for p in order:
            up.report(p, None)
        assert up.all_idle and up.current == 7000, order
    never = UpstreamWatermarks(2)
    never.report(0, None)
    never.report(1, None)
    assert never.current == NO_WATERMARK  # nobody ever reported a time


def test_upstream_state_roundtrip():
    up = UpstreamWatermarks(2)
    up.report(0, 10)
    up.report(1, None)
    restored = UpstreamWatermarks(2)
    restored.restore(orjson.loads(orjson.dumps(up.state())))
    assert restored.current == 10 and restored.idle == {1} and restored.marks == {0: 10}


def test_clock_gives_the_watermark_before_each_record_including_derived_records():
    clock = Clock()
    clock.set_batch([10, 11, 13], [NO_WATERMARK, 5, 7], 9)
    batch = [("k", 1, 0, 10), ("k", 2, 0, 11), ("k", 3, 0, 11), ("k", 4, 0, 13), ("k", 5, 0, 20)]
    assert clock.watermarks_for(batch) == [NO_WATERMARK, 5, 5, 7, 9]
    clock.advance(4)
    assert clock.current == 9  # advance never goes back
    assert clock.watermarks_for([("k", 1, 0, 99)]) == [9]


@given(st.lists(st.integers(-(2**62), 2**62), min_size=2, max_size=30))
def test_pack_ts_sorts_like_the_integers(times):
    packed = sorted(pack_ts(t) for t in times)
    assert [unpack_ts(p) for p in packed] == sorted(times)


def test_store_range_is_half_open_and_ordered(tmp_path):
    store = RocksStore(tmp_path / "s")
    try:
        store.apply({pack_ts(t) + b"k": str(t).encode() for t in (-5, 0, 7, 10, 12)}, {})
        got = [unpack_ts(k) for k, _ in store.range(pack_ts(0), pack_ts(12))]
        assert got == [0, 7, 10]
        assert [unpack_ts(k) for k, _ in store.range(pack_ts(10))] == [10, 12]
        assert len(list(store.items())) == 5
    finally:
        store.close()


def test_position_record_carries_time_state():
    rec = encode_position(42, b'{"0":[1,0]}', b'{"max_ts":99}')
    meta = decode_position(rec)
    assert meta[META_POSITION] == 42
    assert orjson.loads(meta[META_UPSTREAM]) == {"0": [1, 0]}
    assert orjson.loads(meta[META_TIME]) == {"max_ts": 99}
    assert decode_position(encode_position(7)) == {META_POSITION: 7}


@pytest.mark.parametrize(("text", "ms"), [
    ("2024-01-01T00:00:00Z", 1_704_067_200_000),
    ("2024-01-01T00:00:00", 1_704_067_200_000),          # no offset: UTC
    ("2024-01-01T01:00:00.250+01:00", 1_704_067_200_250),
])
def test_iso_timestamps(text, ms):
    assert iso_to_ms(text) == ms


@settings(max_examples=50)
@given(st.integers(0, 4_000_000_000_000))
def test_iso_roundtrip(ms):
    from datetime import UTC, datetime

    text = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
    assert iso_to_ms(text) == ms
