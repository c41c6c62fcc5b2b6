"""The ceilings every scenario is measured against: the raw loop's rates (benchmarks/raw_loop.py,
the worker's clients and commits without processing) under the same guarantee, on the same
broker. `raw` copies every record to an output topic; `raw_read` only consumes and commits.
Each other result gets `fraction_of_raw` and `fraction_of_raw_read` = its records/s / theirs.

The ceilings come from the same invocation, or for what it did not measure from an earlier
report given with `--raw-from` (same broker and partition count, else refused)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CEILINGS = ("raw", "raw_read")
Ceilings = dict[str, dict[str, dict[str, Any]]]  # ceiling -> guarantee -> {records_per_s, source}


def ceiling_rates(results: list[dict[str, Any]], source: str) -> Ceilings:
    """The (median) rates of the ceiling scenarios in `results`, saying where they came from."""
    out: Ceilings = {}
    for r in results:
        rate = (r.get("throughput") or {}).get("records_per_s")
        if r["scenario"] in CEILINGS and rate:
            out.setdefault(r["scenario"], {})[r["guarantee"]] = {"records_per_s": rate,
                                                                 "source": source}
    return out


def merged(earlier: Ceilings | None, this_run: Ceilings) -> Ceilings:
    """This run's ceilings, and an earlier report's for the guarantees this run did not measure."""
    out = {name: dict(by) for name, by in (earlier or {}).items()}
    for name, by in this_run.items():
        out.setdefault(name, {}).update(by)
    return out


def ceiling_from_report(path: Path, broker: str, partitions: int) -> Ceilings:
    """The ceilings of an earlier report (`--raw-from`), refused unless it measured the same
    broker and partition count: a fraction of another setup's ceiling would mean nothing."""
    try:
        report = json.loads(path.read_text())
        meta, results = report["meta"], report["scenarios"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"cannot read the report {path}: {exc}") from None
    if meta.get("broker") != broker or meta.get("partitions") != partitions:
        raise ValueError(f"{path} measured {meta.get('broker')!r} with {meta.get('partitions')} "
                         f"partitions, this run {broker!r} with {partitions}")
    rates = ceiling_rates(results, str(path))
    if not rates:
        raise ValueError(f"{path} has no {' or '.join(f'`{c}`' for c in CEILINGS)} result")
    return rates


def with_fractions(results: list[dict[str, Any]], ceilings: Ceilings) -> list[dict[str, Any]]:
    """Copies of `results`, each with a rate given `fraction_of_<ceiling>` for every ceiling
    measured under its guarantee (a ceiling not of itself; left out where there is none)."""
    out = []
    for r in results:
        rate = (r.get("throughput") or {}).get("records_per_s")
        fractions = {}
        for name, by in ceilings.items():
            top = by.get(r["guarantee"], {}).get("records_per_s")
            if r["scenario"] != name and rate and top:
                fractions[f"fraction_of_{name}"] = round(rate / top, 3)
        out.append({**r, **fractions} if fractions else r)
    return out
