"""`processor test`: run each case of a topology's test file through the driver and compare.

A case starts from empty topics and state. Its steps run in order; after the last one the
driver runs and checkpoints until nothing is left (a bounded run's final commit), then the
committed records of each output topic are compared with the expectation: the fields an
expected record gives (key, value, timestamp, partition, headers) must equal the actual
record's; `match: exact` wants every actual record matched, `subset` only the expected ones;
`ordered` compares sequences, else multisets.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import yaml

from processor.errors import ProcessorError, SpecError, SpecErrors
from processor.graph import build_topology
from processor.spec import load_spec
from processor.testing.cases import (
    Case,
    Expected,
    LoadedTests,
    default_tests,
    load_tests,
    without,
)
from processor.testing.driver import DriverError, TopologyTestDriver
from processor.testing.golden import write_expectations

Outputs = dict[str, list[dict[str, Any]]]


def run_case(topology: Any, loaded: LoadedTests, index: int) -> Outputs:
    """The committed records of every output topic after the case's steps."""
    case = loaded.tests.tests[index]
    with TopologyTestDriver(topology, partitions=loaded.tests.partitions,
                            auto_checkpoint=case.checkpoints == "auto") as driver:
        for step in case.steps:
            if step.input is not None:
                for source, records in step.input.items():
                    for r in records:
                        driver.pipe(source, r.key, r.value, r.timestamp, partition=r.partition,
                                    headers=r.headers)
                driver.run()
            elif step.watermark is not None:
                for source, at in step.watermark.items():
                    driver.pipe_watermark(source, at.ms, partition=at.partition)
                driver.run()
            elif step.advance is not None:
                driver.advance_time(step.advance_ms)
            elif step.checkpoint:
                driver.run()
                driver.checkpoint()
            else:
                driver.crash()
        driver.auto_checkpoint = True
        driver.run()
        return {t: driver.output(t) for t in driver.output_topics()}


def _check_names(loaded: LoadedTests, topology: Any) -> None:
    """Sources and output topics named in the file exist in the topology (file:line errors)."""
    spec = topology.spec
    built = build_topology(topology)
    outputs = {e.topic for sub in built.subtopologies for e in sub.sinks if not e.internal}
    outputs |= {built.dlq_topic, *spec.sinks}
    errors: list[SpecError] = []
    for name in loaded.tests.partitions:
        if name not in spec.sources:
            errors.append(loaded.error(("partitions", name), f"no source {name!r} in the topology"))
    for i, case in enumerate(loaded.tests.tests):
        for j, step in enumerate(case.steps):
            for kind, sources in (("input", step.input), ("watermark", step.watermark)):
                for source in sources or ():
                    where = ("tests", i, "steps", j, kind, source)
                    if source not in spec.sources:
                        errors.append(loaded.error(
                            where, f"no source {source!r} (sources: {', '.join(spec.sources)})"))
                    elif kind == "watermark" and spec.sources[source].kind != "stream":
                        errors.append(loaded.error(
                            where, f"source {source!r} is a {spec.sources[source].kind}: a "
                                   "watermark applies to stream sources"))
        for topic in case.expect:
            if topic not in outputs:
                errors.append(loaded.error(
                    ("tests", i, "expect", topic),
                    f"no output topic {topic!r} (outputs: {', '.join(sorted(outputs))})"))
    if errors:
        raise SpecErrors(errors)


def _matches(expected: dict[str, Any], actual: dict[str, Any]) -> bool:
    for field, want in expected.items():
        if field == "headers":
            have = actual.get("headers", {})
            if any(have.get(k) != str(v) for k, v in (want or {}).items()):
                return False
        elif actual.get(field) != want:
            return False
    return True


def compare(expected: Expected, actual: list[dict[str, Any]]) -> bool:
    want = [without(r, expected.ignore) for r in expected.records]
    actual = [without(r, expected.ignore) for r in actual]
    if expected.ordered:
        if expected.match == "exact":
            return len(want) == len(actual) and all(map(_matches, want, actual))
        it = iter(actual)
        return all(any(_matches(w, a) for a in it) for w in want)
    left = list(actual)
    for w in want:
        hit = next((i for i, a in enumerate(left) if _matches(w, a)), None)
        if hit is None:
            return False
        del left[hit]
    return expected.match == "subset" or not left


def _shown(records: list[dict[str, Any]], like: list[dict[str, Any]]) -> list[str]:
    """One line per record, with the fields the expectation uses (all when it has none)."""
    fields = {f for r in like for f in r} or {"key", "value", "timestamp"}
    return [yaml.safe_dump({f: r[f] for f in ("key", "value", "timestamp", "partition", "headers")
                            if f in fields and f in r}, default_flow_style=True,
                           width=10_000).strip() for r in records]


def diff(topic: str, expected: Expected, actual: list[dict[str, Any]]) -> str:
    import difflib

    records = [without(r, expected.ignore) for r in expected.records]
    want = _shown(records, records)
    have = _shown([without(r, expected.ignore) for r in actual], records)
    if not expected.ordered:
        want, have = sorted(want), sorted(have)
    lines = difflib.unified_diff(want, have, "expected", "actual", lineterm="", n=2)
    how = f"{expected.match}, {'ordered' if expected.ordered else 'any order'}"
    if expected.ignore:
        how += f", ignoring {', '.join(expected.ignore)}"
    return f"  {topic} ({how}):\n" + "\n".join(f"    {line}" for line in lines)


def run_file(topology_path: Path, tests_path: Path, *, update: bool = False,
             only: Collection[int] | None = None) -> int:
    """Run the file's cases (those at the indices `only`, when given)."""
    loaded_topology = load_spec(topology_path)
    loaded = load_tests(tests_path)
    _check_names(loaded, loaded_topology)
    failed, actuals = 0, {}
    for i, case in enumerate(loaded.tests.tests):
        if only is not None and i not in only:
            continue
        start = time.perf_counter()
        try:
            actual = run_case(loaded_topology, loaded, i)
        except (DriverError, ProcessorError) as exc:
            print(f"FAIL {tests_path}: {case.name}: {exc}")
            failed += 1
            continue
        except Exception as exc:  # a Python step's own error escaping its policy, or ours
            print(f"FAIL {tests_path}: {case.name}: {type(exc).__name__}: {exc}")
            failed += 1
            continue
        ms = (time.perf_counter() - start) * 1000
        if update:
            actuals[i] = actual
            print(f"updated {tests_path}: {case.name} ({ms:.0f} ms)")
            continue
        bad = _failures(loaded_topology, case, actual)
        if bad:
            bad += _unexpected_letters(case, actual, build_topology(loaded_topology).dlq_topic)
        if bad:
            failed += 1
            print(f"FAIL {tests_path}: {case.name} ({ms:.0f} ms)")
            print("\n".join(bad))
        else:
            print(f"ok   {tests_path}: {case.name} ({ms:.0f} ms)")
    if update:
        write_expectations(loaded, actuals,
                           {n: s.topic for n, s in loaded_topology.spec.sinks.items()})
    return 1 if failed else 0


def _failures(topology: Any, case: Case, actual: Outputs) -> list[str]:
    sinks = topology.spec.sinks
    out = []
    for topic, expected in case.expectations().items():
        records = actual.get(sinks[topic].topic if topic in sinks else topic, [])
        if not compare(expected, records):
            out.append(diff(topic, expected, records))
    return out


def _unexpected_letters(case: Case, actual: Outputs, dlq: str) -> list[str]:
    """Dead letters the case does not expect often explain a failure: name them."""
    letters = actual.get(dlq, [])
    if not letters or dlq in case.expect:
        return []
    out = [f"  {len(letters)} dead letter(s) in {dlq}:"]
    for r in letters[:5]:
        h = r.get("headers", {})
        out.append(f"    {h.get('processor.source.topic')}@{h.get('processor.source.offset')} "
                   f"{h.get('processor.error.step')}: {h.get('processor.error.class')}: "
                   f"{h.get('processor.error.message')}")
    return out


def select_cases(files: list[Path], patterns: list[str]) -> dict[Path, set[int]]:
    """The indices of the cases per file whose name is one of `patterns` or matches one as a
    glob (`totals*`); a pattern matching no case is an error naming the cases there are."""
    names = {f: [case.name for case in load_tests(f).tests.tests] for f in files}
    selected: dict[Path, set[int]] = {f: set() for f in files}
    for pattern in patterns:
        hits = [(f, i) for f, cases in names.items() for i, name in enumerate(cases)
                if name == pattern or fnmatch.fnmatchcase(name, pattern)]
        if not hits:
            available = ", ".join(repr(n) for cases in names.values() for n in cases)
            raise ProcessorError(f"--case {pattern!r}: no such case in "
                                 f"{', '.join(map(str, files))} (cases: {available or 'none'})")
        for f, i in hits:
            selected[f].add(i)
    return selected


def cmd_test(topology: str, tests: list[str], update: bool, cases: list[str] | None = None) -> int:
    """The CLI's `processor test`: 0 all passed, 1 a case failed, 2 a file is invalid or
    `cases` names no case."""
    path = Path(topology)
    files = [Path(t) for t in tests] or [default_tests(path)]
    selected = select_cases(files, cases) if cases else None
    code = 0
    for f in files:
        if selected is None or selected[f]:
            code = max(code, run_file(path, f, update=update,
                                      only=None if selected is None else selected[f]))
    return code
