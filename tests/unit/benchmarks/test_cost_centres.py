"""py-spy stacks summed into cost centres: each stack goes to the duty of its innermost frame
that names one, helpers to their caller's duty."""

from __future__ import annotations

import linecache

from benchmarks.cost_centres import EMIT_ENCODE_LINE, classify, cost_centres, parse_frame
from benchmarks.scenarios import SCENARIOS
from processor.graph import build_topology
from processor.runtime.kafka.collector import RecordCollector
from processor.spec import load_spec

RUN = ("_run_module_as_main (<frozen runpy>:198);<module> (processor/__main__.py:5);"
       "Worker.run (processor/runtime/worker.py:238)")
CKPT = (f"{RUN};Worker._commit_phase (processor/runtime/worker.py:294);"
        "Checkpointer._checkpoint (processor/runtime/durability/checkpoint.py:184)")
PROCESS = (f"{RUN};Worker._dispatch (processor/runtime/worker.py:289);"
           "Task.process (processor/runtime/tasks/task.py:200)")
WHEN_ROOM = "produce_when_room (processor/runtime/kafka/produce.py:19)"
STACKS = {
    f"{RUN};Worker._poll_phase (processor/runtime/worker.py:265)": "consume (librdkafka poll)",
    f"{PROCESS};<lambda>.<locals>.<listcomp> (json #10381c253038>:1)": "decode",
    f"{PROCESS};<lambda>.<locals>.<listcomp> (json #10381c253038>:1);"
    "_string_encode (processor/serde/formats.py:40)": "decode",
    f"{PROCESS};Aggregate.process (processor/operators/aggregate.py:270)": "operator",
    f"{PROCESS};Aggregate.process (processor/operators/aggregate.py:270);"
    "Aggregate._load (processor/operators/aggregate.py:250);"
    "RocksStore.get (processor/state/store.py:48)": "state read",
    f"{PROCESS};_fused (<fused clean #0123456789ab>:4)": "operator",
    f"{PROCESS};emit (<emit orders-clean #6b8a1edda657>:{EMIT_ENCODE_LINE})":
        "sink encode (serialization)",
    f"{PROCESS};emit (<emit orders-clean #6b8a1edda657>:10)": "sink produce",
    f"{PROCESS};emit (<emit orders-clean #6b8a1edda657>:12);{WHEN_ROOM}": "sink produce",
    f"{CKPT};Checkpointer._write_changelogs (processor/runtime/durability/checkpoint.py:126);"
    f"{WHEN_ROOM}": "changelog produce",
    f"{CKPT};Checkpointer._commit_transaction (processor/runtime/durability/checkpoint.py:240)":
        "checkpoint (flush, offsets, commit)",
    f"{CKPT};Task.committed (processor/runtime/tasks/task.py:342);"
    "RocksStore.apply (processor/state/store.py:95)": "state write",
    f"{RUN};Worker._restore_phase (processor/runtime/worker.py:250);"
    "Restorer.step (processor/runtime/durability/restore.py:147)": "restore, tables",
    "<module> (processor/cli.py:3);_find_and_load (<frozen importlib._bootstrap>:1176)":
        "start-up (imports)",
    f"{RUN};Worker._touch (processor/runtime/worker.py:200)": "other runtime",
    "_bootstrap (threading.py:1002);run (threading.py:982)":
        "other (outside the processor: threads, interpreter)",
}


def test_each_stack_goes_to_the_duty_of_its_innermost_named_frame():
    for stack, centre in STACKS.items():
        assert classify(stack.split(";")) == centre, stack


def test_the_raw_loops_consume_and_produce_lines_and_its_checkpoint():
    from benchmarks import cost_centres as module

    (consume,), produce = module._RAW_LINES["consume"], sorted(module._RAW_LINES["produce"])
    assert len(produce) == 2  # produce(), and produce_when_room() when the queue is full
    run = f"RawLoop.run (benchmarks/raw_loop.py:{consume})"
    assert classify([run]) == "consume (librdkafka poll)"
    assert classify([run, "RawLoop.checkpoint (benchmarks/raw_loop.py:170)"]) == (
        "checkpoint (flush, offsets, commit)")
    for line in produce:
        assert classify([f"RawLoop._copy (benchmarks/raw_loop.py:{line})"]) == "sink produce"
    assert classify([f"RawLoop._copy (benchmarks/raw_loop.py:{produce[0] - 1})"]) == (
        "dispatch (batch by partition, task)")


def test_shares_add_up_over_a_collapsed_profile(tmp_path):
    profile = tmp_path / "profile.txt"
    stacks = list(STACKS)
    start_up = next(k for k, v in STACKS.items() if v == "start-up (imports)")
    profile.write_text(f"{stacks[0]} 30\n{stacks[3]} 50\n{stacks[4]} 10\n{start_up} 10\n"
                       "not a stack line\n")
    assert cost_centres(profile) == [
        {"centre": "operator", "percent": 50.0, "samples": 50, "percent_of_processing": 55.6},
        {"centre": "consume (librdkafka poll)", "percent": 30.0, "samples": 30,
         "percent_of_processing": 33.3},
        {"centre": "state read", "percent": 10.0, "samples": 10, "percent_of_processing": 11.1},
        {"centre": "start-up (imports)", "percent": 10.0, "samples": 10,
         "percent_of_processing": None}]


def test_parse_frame_reads_function_file_and_line():
    assert parse_frame("emit (<emit t #ab>:8)") == ("emit", "<emit t #ab>", 8)
    assert parse_frame("Worker.run (processor/runtime/worker.py:238)") == (
        "Worker.run", "processor/runtime/worker.py", 238)
    assert parse_frame("odd") == ("odd", "", 0)


def test_the_generated_emitters_encoding_line_is_the_one_counted_as_serialization():
    topology = build_topology(load_spec(SCENARIOS["stateless"].topology))
    sink = next(e for s in topology.subtopologies for e in s.sinks if not e.internal)
    emit = RecordCollector(lambda: None, {sink.topic: 4}).emitter_for(sink, 0)
    filename = emit.__code__.co_filename
    assert filename.startswith("<emit ")
    assert linecache.getline(filename, EMIT_ENCODE_LINE).strip().startswith("value, key =")
    produce_lines = [n for n in range(1, 20)
                     if "produce(topic" in linecache.getline(filename, n)]
    assert produce_lines and EMIT_ENCODE_LINE not in produce_lines
