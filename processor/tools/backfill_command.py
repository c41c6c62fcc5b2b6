"""`processor backfill`: argument wiring and what it prints (the work is in tools/backfill.py)."""

from __future__ import annotations

import argparse
import os
import sys

from processor.errors import RecordError


def cmd_backfill(args: argparse.Namespace) -> int:
    from processor.observability.logging import setup_logging
    from processor.runtime.config import load_config
    from processor.spec import load_spec
    from processor.spec.file_overrides import require_topics
    from processor.tools.backfill import backfill

    loaded = load_spec(args.topology)
    require_topics(loaded)  # the live application runs over topics
    config = load_config(args.config, bootstrap_servers=args.bootstrap_servers,
                         state_dir=args.state_dir, log_format=args.log_format)
    setup_logging(config.log_level, config.log_format)
    try:
        done = backfill(loaded, config, out=sys.stdout)
    except RecordError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    run = f"`processor run {args.topology}`"
    if done.status == "already_done":
        print(f"backfill {done.identity} of {loaded.spec.name!r} is already done (outputs "
              f"committed, state restored, live from offsets {_offsets(done.switch)}): "
              f"continue with {run}")
        return 0
    if done.status == "done":
        rows = sum(done.history_rows.values())
        print(f"  history run in {done.batch_seconds:.2f}s "
              f"({rows / max(done.batch_seconds, 1e-3):,.0f} rows/s)")
        for source, n in done.history_rows.items():
            print(f"  {source}: {n} history row(s) read, {done.after_switch_rows.get(source, 0)} "
                  "at or after the switch left to the live topic")
        for topic, n in done.topic_records.items():
            print(f"  wrote {n} record(s) to topic {topic}")
    print(f"restored the history's state ({done.restored_records} records, from "
          f"{done.savepoint}) into application {loaded.spec.name!r} in {done.restore_seconds:.1f}s: "
          f"continue live from the switch with {run}")
    return 0


def _offsets(switch: dict[str, dict[int, int]]) -> str:
    return ", ".join(f"{t} {offs}" for t, offs in switch.items())


def add_backfill(sub: argparse._SubParsersAction, topology_help: str, bootstrap_help: str) -> None:
    b = sub.add_parser("backfill", help="run a topology over its history (`backfill:` "
                                        "sources), then hand its state over to the live topic "
                                        "at the switch point, exactly once; rerun after a crash")
    b.add_argument("topology", help=topology_help)
    b.add_argument("--state-dir", help="where the history's state is kept until the hand-over "
                                       "is done (default: the worker config's state_dir)")
    b.add_argument("--config", help="worker config YAML: connection, security, state_dir, "
                                    "replication (default: none, the environment's)")
    b.add_argument("--bootstrap-servers", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"),
                   help=bootstrap_help)
    b.add_argument("--log-format", choices=["auto", "json", "text"],
                   help="log format (default: auto)")
    b.set_defaults(fn=cmd_backfill)
