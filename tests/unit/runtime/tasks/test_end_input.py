"""Task.end_input: a bounded source partition at its end sends its watermark to the end of
time, so every window closes, downstream of a repartition too, and its position moves to the
end without going back or skipping a record (runs in the in-process test driver)."""

from __future__ import annotations

from processor.spec import load_spec_text
from processor.testing import TopologyTestDriver
from processor.timeutil.watermark import END_OF_TIME

SPEC = """
name: gmv
sources:
  orders:
    topic: orders
    timestamp: {field: ts}
    watermark: {max_out_of_orderness: 2s}
pipelines:
  - from: orders
    steps:
      - key_by: "value['country']"
      - window: {tumbling: 1s, late: drop}
      - aggregate: {store: gmv, orders: count()}
      - map: {fields: {country: key, second: "value['window_start']", orders: "value['orders']"}}
      - to: {topic: out}
"""


def _sources(driver: TopologyTestDriver) -> list:
    return [t for t in driver.tasks if t.topic == "orders"]


def test_end_of_input_closes_every_window_through_the_repartition_topic():
    with TopologyTestDriver(load_spec_text(SPEC), partitions={"orders": 2}) as driver:
        for i in range(6):
            driver.pipe("orders", "k", {"country": "fr" if i % 2 else "de", "ts": i * 500},
                        partition=i % 2)
        driver.run()
        assert driver.output("out") == [], "within out-of-orderness: every window still open"
        for task in _sources(driver):
            task.end_input(task.position)
        driver.run()
        got = sorted((r["value"]["country"], r["value"]["second"], r["value"]["orders"])
                     for r in driver.output("out"))
        assert got == [(c, s, 1) for c in ("de", "fr") for s in (0, 1000, 2000)]
        assert all(t.watermark == END_OF_TIME for t in driver.tasks)
        assert all(t.input_ended for t in _sources(driver))


def test_position_moves_to_the_end_but_never_back():
    with TopologyTestDriver(load_spec_text(SPEC), partitions={"orders": 2}) as driver:
        driver.pipe("orders", "k", {"country": "fr", "ts": 0}, partition=0)
        driver.run()
        first, second = _sources(driver)
        first.end_input(7)  # transaction markers after the last record: never delivered
        assert first.position == 7
        second.position = 12  # a committed offset past the range's end wins
        second.end_input(3)
        assert second.position == 12
        assert first.has_progress and second.has_progress


COUNTS = """
name: counts
sources:
  orders: {topic: orders}
pipelines:
  - from: orders
    steps:
      - key_by: "value['country']"
      - aggregate: {store: counts, orders: count()}
      - to: {topic: out}
"""


def test_a_repartition_input_keeps_the_end_across_a_restart_without_event_time():
    """No timed step: the downstream task still records its upstream watermarks, so after a
    crash it knows every upstream partition ended (a bounded run would otherwise never end:
    the end reports were read before the crash)."""
    with TopologyTestDriver(load_spec_text(COUNTS), partitions={"orders": 2}) as driver:
        driver.pipe("orders", "k", {"country": "fr"}, partition=0)
        driver.run()
        for task in _sources(driver):
            task.end_input(task.position or 0)
        driver.run()
        downstream = [t for t in driver.tasks if t.topic != "orders"]
        assert downstream and all(t.watermark == END_OF_TIME for t in downstream)
        driver.checkpoint()
        driver.crash()
        downstream = [t for t in driver.tasks if t.topic != "orders"]
        assert all(t.watermark == END_OF_TIME for t in downstream)
