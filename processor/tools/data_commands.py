"""The data tools' commands: `processor produce | consume | topics | reset` (argument wiring
and dispatch; the work is in tools/produce.py, tools/consume.py, tools/topics_cli.py,
tools/reset.py and tools/reset_savepoint.py), and the options they share with `savepoint`."""

from __future__ import annotations

import argparse
import math
import os
import sys

from processor.errors import ProcessorError
from processor.runtime.config import WorkerConfig


def _tool_config(args: argparse.Namespace, **overrides: object) -> WorkerConfig:
    """The worker's connection settings for a data tool (file < environment < flags)."""
    from processor.observability.logging import setup_logging
    from processor.runtime.config import load_config

    setup_logging("WARNING", "text")
    return load_config(args.config, bootstrap_servers=args.bootstrap_servers, **overrides)


def cmd_topics(args: argparse.Namespace) -> int:
    from processor.tools import topics_cli

    config = _tool_config(args)
    if args.topics_command == "create":
        return topics_cli.create(config, args.topic, partitions=args.partitions,
                                 replication_factor=args.replication_factor,
                                 configs=topics_cli.parse_configs(args.topic_config))
    if args.topics_command == "list":
        return topics_cli.list_topics(config, internal=args.internal)
    return topics_cli.describe(config, args.topic)


def cmd_produce(args: argparse.Namespace) -> int:
    from processor.tools.produce import produce

    if args.rate is not None and not 0 < args.rate < math.inf:
        raise ProcessorError(f"--rate {args.rate:g}: a rate is records a second, greater than 0; "
                             "leave --rate out for no limit")
    config = _tool_config(args)
    if args.file is None:
        produce(config, args.topic, sys.stdin, "stdin", key_field=args.key_field,
                envelope=args.envelope, rate=args.rate)
        return 0
    with open(args.file, encoding="utf-8") as lines:
        produce(config, args.topic, lines, args.file, key_field=args.key_field,
                envelope=args.envelope, rate=args.rate)
    return 0


def cmd_consume(args: argparse.Namespace) -> int:
    from processor.timeutil import parse_duration_ms
    from processor.tools.consume import consume

    config = _tool_config(args)
    timeout = parse_duration_ms(args.timeout) / 1000 if args.timeout else None
    shown = consume(config, args.topic, from_beginning=args.from_beginning, count=args.count,
                    timeout_s=timeout, as_json=args.json)
    if args.count is not None and shown < args.count:
        print(f"error: {args.topic}: {shown} of {args.count} records within --timeout "
              f"{args.timeout}", file=sys.stderr)
        return 1
    return 0


def cmd_reset(args: argparse.Namespace) -> int:
    from pathlib import Path

    from processor.graph import build_topology
    from processor.spec import load_spec
    from processor.timeutil import parse_duration_ms
    from processor.tools.reset import parse_target, reset

    renames = parse_renames(args.rename_store)
    if (renames or args.drop_store) and args.to_savepoint is None:
        raise ProcessorError("--rename-store and --drop-store apply to a restore: add "
                             "--to-savepoint DIR")
    topology = build_topology(load_spec(args.topology))
    config = _tool_config(args, state_dir=args.state_dir)
    if args.to_savepoint is not None:
        from processor.tools.reset_savepoint import reset_to_savepoint

        reset_to_savepoint(topology, config, Path(args.to_savepoint), renames=renames,
                           drops=args.drop_store, delete_dlq=args.delete_dlq,
                           dry_run=args.dry_run, as_json=args.json)
        return 0
    target = parse_target(to_latest=args.to_latest, to_datetime=args.to_datetime,
                          by_duration_ms=parse_duration_ms(args.by_duration)
                          if args.by_duration else None)
    reset(topology, config, target, delete_dlq=args.delete_dlq, dry_run=args.dry_run,
          as_json=args.json)
    return 0


def parse_renames(pairs: list[str]) -> dict[str, str]:
    """`--rename-store OLD=NEW` values as {OLD: NEW}."""
    out: dict[str, str] = {}
    for pair in pairs:
        old, sep, new = pair.partition("=")
        if not sep or not old or not new or old == new:
            raise ProcessorError(f"--rename-store {pair!r}: expected OLD=NEW, two store names")
        if old in out:
            raise ProcessorError(f"--rename-store {old}=...: given twice")
        out[old] = new
    return out


def migration_options(sp: argparse.ArgumentParser) -> None:
    """How a restore maps the savepoint's stores onto a changed topology."""
    sp.add_argument("--rename-store", action="append", default=[], metavar="OLD=NEW",
                    help="restore the savepoint's store OLD into the topology's store NEW "
                         "(repeatable; default: stores restore into the same name)")
    sp.add_argument("--drop-store", action="append", default=[], metavar="NAME",
                    help="drop the state of the savepoint's store NAME, which the topology no "
                         "longer has (repeatable; default: such a store is refused)")


def connection(sp: argparse.ArgumentParser) -> None:
    """The options every command that talks to the broker takes: where, and with which config."""
    sp.add_argument("--bootstrap-servers", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"),
                    help="broker address (default: $KAFKA_BOOTSTRAP_SERVERS, else the "
                         "config's bootstrap_servers)")
    sp.add_argument("--config", help="worker config YAML: its connection and security "
                                     "settings are used (default: none, the environment's)")


def add_data_tools(sub: argparse._SubParsersAction) -> None:
    """produce | consume | topics | reset: put records on a topic, read them back, manage
    topics, reset an application for reprocessing."""
    pr = sub.add_parser("produce", help="write JSON lines (stdin or --file) to a topic")
    pr.add_argument("topic", help="the topic to write to")
    pr.add_argument("--file", help="read this file (default: stdin)")
    pr.add_argument("--key-field", metavar="FIELD",
                    help="use this field of each JSON object as the record key (default: no key)")
    pr.add_argument("--envelope", action="store_true",
                    help='each line is {"key", "value", "timestamp" (ms), "headers"}: what '
                         "`consume --json` prints (default: the line is the value)")
    pr.add_argument("--rate", type=float, metavar="N",
                    help="at most N records a second, N > 0 (default: no limit, as fast as "
                         "possible)")
    connection(pr)
    pr.set_defaults(fn=cmd_produce)

    co = sub.add_parser("consume", help="print a topic's committed records (read_committed)")
    co.add_argument("topic", help="the topic to read")
    co.add_argument("--from-beginning", action="store_true",
                    help="start at the oldest record (default: only new records)")
    co.add_argument("--count", type=int, metavar="N",
                    help="stop after N records, exit 1 if fewer came by --timeout (default: "
                         "no limit)")
    co.add_argument("--timeout", metavar="DURATION",
                    help="stop when no record came for this long, e.g. 5s (default: never)")
    co.add_argument("--json", action="store_true",
                    help="one JSON object per record, the `produce --envelope` shape (default: "
                         "a readable view)")
    connection(co)
    co.set_defaults(fn=cmd_consume)

    t = sub.add_parser("topics", help="create, list or describe topics")
    tsub = t.add_subparsers(dest="topics_command", required=True)
    tc = tsub.add_parser("create", help="create a topic (e.g. a topology's source)")
    tc.add_argument("topic", help="the topic to create")
    tc.add_argument("--partitions", type=int, default=1,
                    help="partition count: the parallelism of a topology reading it (default 1)")
    tc.add_argument("--replication-factor", type=int, default=-1,
                    help="copies of each partition (default: the broker's default)")
    tc.add_argument("--topic-config", action="append", default=[], metavar="NAME=VALUE",
                    help="a topic config, e.g. cleanup.policy=compact (repeatable; default: "
                         "the broker's)")
    tl = tsub.add_parser("list", help="list topics with their partition counts")
    tl.add_argument("--internal", action="store_true",
                    help="include __consumer_offsets & co (default: %(default)s)")
    td = tsub.add_parser("describe", help="partitions, replicas and non-default configs")
    td.add_argument("topic", help="the topic to describe")
    for sp in (tc, tl, td):
        connection(sp)
        sp.set_defaults(fn=cmd_topics)

    rs = sub.add_parser("reset", help="reprocess from a point: move the input offsets, delete "
                                      "the internal topics and this machine's state (workers "
                                      "stopped)")
    rs.add_argument("topology", help="the topology YAML file")
    to = rs.add_mutually_exclusive_group()
    to.add_argument("--to-earliest", action="store_true",
                    help="restart the inputs at their first record (default: this)")
    to.add_argument("--to-latest", action="store_true",
                    help="restart the inputs at their end: skip what is there (default: "
                         "earliest)")
    to.add_argument("--to-datetime", metavar="ISO8601",
                    help="restart at the first record at or after this time, e.g. "
                         "2026-01-31T12:00:00Z, no zone meaning UTC (default: earliest)")
    to.add_argument("--by-duration", metavar="DURATION",
                    help="restart at the first record at or after now minus this, e.g. 2h "
                         "(default: earliest)")
    to.add_argument("--to-savepoint", metavar="DIR",
                    help="restart from a savepoint's offsets and state: reset, then restore DIR "
                         "into the application (default: earliest)")
    migration_options(rs)
    rs.add_argument("--delete-dlq", action="store_true",
                    help="also delete the dead-letter topic (default: kept)")
    rs.add_argument("--state-dir", help="this machine's state directory whose application "
                                        "state is removed (default: the config's state_dir)")
    rs.add_argument("--dry-run", action="store_true",
                    help="print the plan, change nothing (default: %(default)s)")
    rs.add_argument("--json", action="store_true",
                    help="print the plan as one JSON object; with --to-savepoint a second one, "
                         "the restore's (default: text)")
    connection(rs)
    rs.set_defaults(fn=cmd_reset)
