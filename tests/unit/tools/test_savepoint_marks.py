"""Offsets inside repartition envelopes across a same-count restore (tools/savepoint_marks.py):
the map keeps order, re-produced records land on their new offsets, older offsets fall below
every new one (tests/integration/test_savepoint_chain.py shows the restored chain on a broker)."""

from __future__ import annotations

import orjson

from processor.tools.savepoint_marks import SlotOffsets, offset_map


def test_offset_map_keeps_order_and_places_old_offsets_below_new_ones() -> None:
    # in flight from old offset 700: records at 700, 701, 703 re-produced at 0, 1, 2
    m = offset_map(700, [(700, 0), (701, 1), (703, 2)], 3)
    assert [m(700), m(701), m(703)] == [0, 1, 2]
    assert m(699) == -1 and m(650) == -50        # absorbed before the cut: below every new offset
    olds = [600, 650, 699, 700, 701, 702, 703]
    assert [m(o) for o in olds] == sorted(m(o) for o in olds)
    none = offset_map(500, [], 0)                 # nothing in flight: new records start at 0
    assert none(499) == -1 and none(10) == -490
    assert none(500) == -1  # nothing was in flight, so nothing at or past 500 was absorbed


def test_slots_of_repartition_feeders_are_mapped_source_slots_kept() -> None:
    # feeders: a source topic of 2 partitions (slots 0-1), a repartition topic of 2 (slots 2-3)
    rep = {0: offset_map(100, [(100, 0)], 1), 1: offset_map(50, [], 0)}
    slots = SlotOffsets.for_reader([(2, None), (2, rep)])
    assert slots.marks({"0": [900, 0], "2": [99, 3], "3": [49, 0]}) == {
        "0": [900, 0], "2": [-1, 3], "3": [-1, 0]}
    env = orjson.dumps([2, 100, 0, {"n": 1}])
    assert orjson.loads(slots.envelope(env)) == [2, 0, 0, {"n": 1}]
    source_env = orjson.dumps([1, 77, 0, "v"])
    assert slots.envelope(source_env) == source_env
    report = orjson.dumps([3, 1_700_000_000_000])  # a watermark report passes unchanged
    assert slots.envelope(report) == report
    assert not SlotOffsets.for_reader([(4, None)])

