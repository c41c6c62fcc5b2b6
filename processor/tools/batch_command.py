"""`processor batch`: run a topology once over bounded inputs and print what it read and wrote."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from processor.errors import RecordError

if TYPE_CHECKING:
    from processor.spec import LoadedSpec


def cmd_batch(args: argparse.Namespace) -> int:
    from processor.graph import build_topology
    from processor.observability.logging import setup_logging
    from processor.runtime.batch.engine import BatchRun
    from processor.runtime.config import load_config
    from processor.spec import load_spec
    from processor.spec.bound_overrides import parse_override, with_bounds
    from processor.spec.file_overrides import file_outputs, parse_assignments, with_files

    loaded = load_spec(args.topology)
    if args.start or args.end:
        loaded = with_bounds(loaded, dict(parse_override(a, "--start") for a in args.start or []),
                             dict(parse_override(a, "--end") for a in args.end or []))
    loaded = with_files(loaded, parse_assignments(args.input, "--input"),
                        keys=parse_assignments(args.key, "--key"),
                        partitions=parse_assignments(args.partitions, "--partitions"))
    written = build_topology(loaded).output_topics
    files = file_outputs(loaded, parse_assignments(args.output, "--output"), written,
                         key_columns=parse_assignments(args.output_key, "--output-key"))
    config = load_config(args.config, bootstrap_servers=args.bootstrap_servers,
                         log_format=args.log_format)
    setup_logging(config.log_level, config.log_format)
    try:
        state = None
        if args.state_dir is not None:  # the run's own directory inside it, removed at the end
            Path(args.state_dir).mkdir(parents=True, exist_ok=True)
            state = Path(tempfile.mkdtemp(prefix=f"{loaded.spec.name}.batch-",
                                          dir=args.state_dir))
        run = BatchRun(loaded, config, files=files, state_dir=state)
        try:
            summary = run.run()
        finally:
            if state is not None:
                shutil.rmtree(state, ignore_errors=True)
    except RecordError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    rows = sum(summary.input_rows.values())
    rate = rows / summary.seconds if summary.seconds > 0 else 0.0
    read = ", ".join(f"{n} from {s}" for s, n in summary.input_rows.items()) or "nothing"
    print(f"batch {loaded.spec.name}: read {read} rows in {summary.seconds:.2f} s "
          f"({rate:,.0f} rows/s)")
    for source, n in summary.bad_rows.items():
        print(f"  {source}: {n} bad row(s) (see the log; policy {_policy(loaded, source)})")
    for topic, n in summary.file_rows.items():
        print(f"  wrote {n} row(s) to {files[topic].path}")
    for topic, n in summary.topic_records.items():
        print(f"  wrote {n} record(s) to topic {topic}")
    return 0


def _policy(loaded: LoadedSpec, source: str) -> str:
    src = next(s for s in loaded.spec.sources.values() if s.topic == source)
    return src.on_error or loaded.spec.on_error


def add_batch(sub: argparse._SubParsersAction, topology_help: str, bootstrap_help: str) -> None:
    b = sub.add_parser("batch", help="run a topology once over files or topic ranges to the "
                                     "end of input (every window closes), then exit")
    b.add_argument("topology", help=topology_help)
    b.add_argument("--input", action="append", metavar="SOURCE=PATH",
                   help="read this source from files: a file, a directory or a glob; .jsonl, "
                        ".csv or .parquet (repeatable; default: the sources' `file:`)")
    b.add_argument("--key", action="append", metavar="SOURCE=FIELD",
                   help="the field holding a file source's key (default: the source's "
                        "`file.key`, else no key)")
    b.add_argument("--partitions", action="append", metavar="SOURCE=N",
                   help="partitions of the topic the source would be live on: rows go to them "
                        "by key, as a producer would put them (default: the source's "
                        "`partitions:`, else 1)")
    b.add_argument("--output-key", action="append", metavar="SINK=COLUMN",
                   help="add each record's key to a file output's rows as this column "
                        "(repeatable; default: the sink's `file.key`, else no key column)")
    b.add_argument("--start", action="append", metavar="SOURCE=POINT",
                   help="a topic source's first record: earliest, an ISO-8601 time, epoch ms or "
                        "partition:offset,... (repeatable; default: the source's `bounded:`, "
                        "else earliest)")
    b.add_argument("--end", action="append", metavar="SOURCE=POINT",
                   help="where a topic source ends (not included): latest, a time or "
                        "partition:offset,... (repeatable; default: the source's `bounded:`, "
                        "else its end when the run starts)")
    b.add_argument("--output", action="append", metavar="SINK=PATH",
                   help="write this sink to a file instead of its topic, atomically "
                        "(repeatable; default: the sinks' `file:` or topic)")
    b.add_argument("--state-dir", help="where the run's RocksDB stores live while it runs, "
                                       "in a directory of their own removed at the end "
                                       "(default: the system's temporary directory)")
    b.add_argument("--config", help="worker config YAML: the broker and client settings for "
                                    "topic outputs and tables (default: none, built-in defaults)")
    b.add_argument("--bootstrap-servers", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"),
                   help=bootstrap_help)
    b.add_argument("--log-format", choices=["auto", "json", "text"],
                   help="log format (default: auto)")
    b.set_defaults(fn=cmd_batch)
