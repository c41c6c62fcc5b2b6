"""`processor savepoint create | inspect | restore` (argument wiring and dispatch; the work is
in tools/savepoint.py, tools/savepoint_restore.py and tools/savepoint_format.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from processor.errors import ProcessorError
from processor.tools.data_commands import connection, migration_options, parse_renames


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _rate(n: int, b: int, seconds: float) -> str:
    s = max(seconds, 1e-3)
    return f"{n / s:,.0f} records/s, {b / s / 1e6:.1f} MB/s"


def cmd_savepoint(args: argparse.Namespace) -> int:
    if args.savepoint_command == "inspect":
        from processor.tools.savepoint import inspect

        if args.store is None and (args.partition is not None or args.limit is not None):
            raise ProcessorError("--partition and --limit apply to a store's entries: add --store")
        inspect(Path(args.dir), store=args.store, partition=args.partition, limit=args.limit)
        return 0

    from processor.graph import build_topology
    from processor.spec import load_spec
    from processor.tools.data_commands import _tool_config

    topology = build_topology(load_spec(args.topology))
    config = _tool_config(args)
    if args.savepoint_command == "create":
        from processor.tools.savepoint import create, summary

        if args.stop_workers:
            from processor.timeutil import parse_duration_ms
            from processor.tools.savepoint_format import check_new
            from processor.tools.stop_workers import stop_workers

            try:
                timeout_s = parse_duration_ms(args.stop_timeout) / 1000
            except ValueError as exc:
                raise ProcessorError(f"--stop-timeout: {exc}") from None
            check_new(Path(args.to))  # before stopping anything
            stopped = stop_workers(config, topology.name, timeout_s=timeout_s)
            if stopped:
                print(f"stopped {len(stopped)} worker(s): "
                      f"{', '.join(t.worker_id for t in stopped)}")
        manifest = create(topology, Path(args.topology), config, Path(args.to))
        print(summary(manifest))
        read = sum(s["changelog_records_read"] for s in manifest["stores"].values())
        inflight = sum(sum(t["records"].values()) for t in manifest["inflight"].values())
        print(f"written to {args.to} in {manifest['seconds']:.1f}s: {read} changelog and "
              f"{inflight} in-flight records read, {_mb(manifest['bytes'])} written "
              f"({_rate(read + inflight, manifest['bytes'], manifest['seconds'])})")
        return 0
    from processor.tools.savepoint_restore import restore

    done = restore(Path(args.dir), topology, config, renames=parse_renames(args.rename_store),
                   drops=args.drop_store)
    for line in done["migrated"]:
        print(line)
    print(f"restored {args.dir} into application {topology.name!r}: {done['records']} records "
          f"({_mb(done['bytes'])}) in {done['seconds']:.1f}s "
          f"({_rate(done['records'], done['bytes'], done['seconds'])}), "
          f"{done['offsets_committed']} group offsets committed; start it with "
          f"`processor run {args.topology}`")
    for topic, (old, new) in done.get("rescaled", {}).items():
        print(f"rescaled: source {topic} from {old} to {new} partitions, state moved by key")
    return 0


def add_savepoint(sub: argparse._SubParsersAction, topology_help: str) -> None:
    """savepoint create | inspect | restore."""
    s = sub.add_parser("savepoint", help="snapshot a stopped application's state; inspect it; "
                                         "start an application from it")
    ssub = s.add_subparsers(dest="savepoint_command", required=True)
    sc = ssub.add_parser("create", help="write the state, offsets and in-flight records of a "
                                        "stopped application (or, with --stop-workers, of one "
                                        "it stops) to a directory")
    sc.add_argument("topology", help=topology_help)
    sc.add_argument("--to", required=True, metavar="DIR",
                    help="the savepoint directory to create; it must not exist (required: no default)")
    sc.add_argument("--stop-workers", action="store_true",
                    help="first stop the application's running workers (POST /stop on each "
                         "one's HTTP port, with remote_stop_token) and wait until its group is "
                         "empty (default: refuse while a worker runs)")
    sc.add_argument("--stop-timeout", default="120s", metavar="DURATION",
                    help="with --stop-workers: how long the workers may take to leave the group "
                         "(default 120s)")
    connection(sc)
    si = ssub.add_parser("inspect", help="summarise a savepoint, or print a store's entries")
    si.add_argument("dir", help="the savepoint directory")
    si.add_argument("--store", help="print this store's entries (default: the summary only)")
    si.add_argument("--partition", type=int, metavar="N",
                    help="only this partition's entries (default: all partitions)")
    si.add_argument("--limit", type=int, metavar="N", help="at most N entries (default: all)")
    sr = ssub.add_parser("restore", help="start the topology's application (a new one, or one "
                                         "reset) from a savepoint, migrating added/removed "
                                         "aggregate fields and renamed stores, or rescaling its "
                                         "state when a source's partition count changed")
    sr.add_argument("dir", help="the savepoint directory")
    sr.add_argument("topology", help=topology_help + "; its name is the application restored into")
    migration_options(sr)
    connection(sr)
    for sp in (sc, si, sr):
        sp.set_defaults(fn=cmd_savepoint)
