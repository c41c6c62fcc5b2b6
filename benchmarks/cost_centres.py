"""Where a worker's CPU goes, by duty: a py-spy profile (collapsed stacks, `--profile`) summed
into cost centres (decode, operator, state read / write, changelog produce, sink encode, sink
produce, commit, consume (librdkafka poll), ...). It answers what the raw ceiling leaves open:
which part of the worker takes the time the raw loop does not spend.

    python -m benchmarks.cost_centres benchmarks/results/profile-cpu-aggregate-exactly_once.txt

Each sample goes to the innermost frame of its stack that names a duty (`RULES`, checked from
the leaf towards the root; `FALLBACK` when none does): time in a C call (librdkafka, orjson,
RocksDB) is charged by py-spy to the Python line that made it, so e.g. `produce_when_room` is
charged to whoever called it (an emitter: sink produce; the checkpoint's changelog writes:
changelog produce). Generated code shows under its compile name (processor/codegen.py),
shortened by py-spy after the last `/`: `<emit TOPIC #..>` the sink, `<fused ..>` and
`<aggregate ..>` operator steps, anything else generated (`json #..>` = `<decode string/json
#..>`) the batch decoder.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

EMIT_ENCODE_LINE = 8
"""The line of the generated sink emitter (runtime/kafka/collector.py) that encodes key and
value; its other lines produce (tests/unit/benchmarks/test_cost_centres.py checks it)."""

START_UP = "start-up (imports)"
_FRAME = re.compile(r"^(?P<fn>.*) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")
Frame = tuple[str, str, int]  # function, file, line (0 when unknown)


def _generated(file: str, *labels: str) -> bool:
    return "#" in file and file.endswith(">") and file.lstrip("<").startswith(labels)


def _is_decode(f: Frame) -> bool:
    file = f[1]
    if file.endswith("processor/runtime/tasks/decode.py"):
        return True
    return ("#" in file and file.endswith(">")
            and not _generated(file, "emit", "fused", "aggregate", "avro fast check"))


RULES: list[tuple[str, Callable[[Frame], bool]]] = [
    ("sink encode (serialization)", lambda f: _generated(f[1], "emit") and f[2] == EMIT_ENCODE_LINE),
    ("sink produce", lambda f: _generated(f[1], "emit")
     or f[1].endswith("processor/runtime/kafka/collector.py")
     or (f[0] == "RawLoop._copy" and f[2] in _RAW_LINES["produce"])),
    ("changelog produce", lambda f: f[0].startswith(("Checkpointer._write_changelogs",
                                                     "Checkpointer._changelog_delivered"))),
    # the rest of the checkpoint: flush, offsets into the transaction, commit (its operators'
    # flush and emits are deeper frames, matched above or below)
    ("checkpoint (flush, offsets, commit)", lambda f: f[0].startswith("RawLoop.checkpoint")
     or f[1].endswith("processor/runtime/durability/checkpoint.py")),
    ("state read", lambda f: "processor/state/" in f[1] and "get" in f[0].lower()),
    ("state write", lambda f: "processor/state/" in f[1]),
    ("decode", _is_decode),
    ("operator", lambda f: "processor/operators/" in f[1] or "processor/expressions" in f[1]
     or _generated(f[1], "fused", "aggregate")),
    # the worker's poll phase is its consume() call; in the raw loop's `run`, the consume line
    ("consume (librdkafka poll)", lambda f: f[0] == "Worker._poll_phase"
     or (f[0] == "RawLoop.run" and f[2] in _RAW_LINES["consume"])),
    ("dispatch (batch by partition, task)", lambda f: f[0].startswith(
        ("by_partition", "Worker._dispatch", "Task.process", "RawLoop._copy"))),
    ("restore, tables", lambda f: f[1].endswith(("processor/runtime/durability/restore.py",
                                                 "processor/runtime/durability/tables.py"))),
    (START_UP, lambda f: "importlib" in f[1]),
]
FALLBACK: list[tuple[str, Callable[[Frame], bool]]] = [
    # only when no frame of the stack names a duty: helpers such as produce_when_room or a
    # serde function belong to their caller's duty
    ("other runtime", lambda f: "processor/" in f[1] or "benchmarks/" in f[1]),
]


def _raw_lines() -> dict[str, set[int]]:
    """The raw loop's lines that consume and that produce (a raw profile has no other frame
    to tell them from the loop's own work)."""
    src = (Path(__file__).parent / "raw_loop.py").read_text().splitlines()
    return {"consume": {i for i, line in enumerate(src, 1) if "self.consumer.consume(" in line},
            "produce": {i for i, line in enumerate(src, 1)
                        if line.strip().startswith(("produce(", "produce_when_room("))}}


_RAW_LINES = _raw_lines()


def parse_frame(text: str) -> Frame:
    m = _FRAME.match(text)
    if not m:
        return text, "", 0
    return m["fn"], m["file"], int(m["line"] or 0)


def classify(frames: list[str]) -> str:
    """The cost centre of one stack (root first, leaf last)."""
    parsed = [parse_frame(text) for text in reversed(frames)]
    for rules in (RULES, FALLBACK):
        for frame in parsed:
            for name, match in rules:
                if match(frame):
                    return name
    return "other (outside the processor: threads, interpreter)"


def cost_centres(path: Path) -> list[dict[str, Any]]:
    """Cost centres by share of the profile's samples (on-CPU samples under `--profile cpu`),
    largest first."""
    counts: dict[str, int] = {}
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [f for f in stack.split(";") if f]
        centre = classify(frames)
        counts[centre] = counts.get(centre, 0) + int(count)
        total += int(count)
    processing = total - counts.get(START_UP, 0)
    return [{"centre": c, "percent": round(100 * n / total, 1), "samples": n,
             # of the samples after start-up: the processing, whatever the run's length
             "percent_of_processing": (round(100 * n / processing, 1)
                                       if c != START_UP and processing else None)}
            for c, n in sorted(counts.items(), key=lambda x: -x[1])] if total else []


def main(argv: list[str]) -> int:
    for name in argv:
        print(name)
        print("  of all samples / of those after start-up")
        for row in cost_centres(Path(name)):
            rest = row["percent_of_processing"]
            print(f"  {row['percent']:5.1f}%  {'' if rest is None else f'{rest:5.1f}%':>6}  "
                  f"{row['centre']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
