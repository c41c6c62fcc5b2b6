"""`processor` command line: validate | describe | upgrade-check | run | batch | backfill | test |
produce | consume | topics | dlq inspect | dlq replay | savepoint | dev-broker | demo | completion |
reset. Every failure is one `error:` line and an exit code, never a traceback."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from pathlib import Path

from confluent_kafka import KafkaException

from processor.errors import ProcessorError, RecordError, SpecErrors
from processor.tools.backfill_command import add_backfill
from processor.tools.batch_command import add_batch
from processor.tools.data_commands import add_data_tools
from processor.tools.savepoint_commands import add_savepoint

log = logging.getLogger("processor.cli")


def _load_topology(path: str):
    from processor.graph import build_topology
    from processor.spec import load_spec

    return build_topology(load_spec(path))


def _bounds(args: argparse.Namespace) -> tuple[dict, dict]:
    """`--start` / `--end SOURCE=POINT` flags -> {source: point} each; one flag per source."""
    from processor.spec.bound_overrides import parse_override

    out: tuple[dict, dict] = ({}, {})
    for flag, given, points in (("--start", args.start, out[0]), ("--end", args.end, out[1])):
        for arg in given or []:
            source, point = parse_override(arg, flag)
            if points.setdefault(source, point) != point:
                raise ProcessorError(f"{flag} is given twice for source {source!r}")
    return out


def cmd_validate(args: argparse.Namespace) -> int:
    topo = _load_topology(args.topology)
    stores = len(topo.stores)
    print(f"ok: {args.topology}: topology {topo.name!r}, {len(topo.subtopologies)} sub-topologies, "
          f"{stores} state store{'s' if stores != 1 else ''}")
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    topology = _load_topology(args.topology)
    if args.format != "text":
        from processor.graph.diagram import build_diagram, to_dot, to_mermaid

        render = to_mermaid if args.format == "mermaid" else to_dot
        print(render(build_diagram(topology)))
        return 0
    print(topology.describe())
    if args.config is not None or args.show_config:
        import yaml

        from processor.runtime.config import load_config

        config = load_config(args.config)
        print("Worker configuration (file < PROCESSOR_* environment; secrets masked):")
        print(yaml.safe_dump(config.masked(), sort_keys=True, default_flow_style=False).rstrip())
    return 0


def cmd_upgrade_check(args: argparse.Namespace) -> int:
    from processor.tools.upgrade_check import upgrade_check

    return upgrade_check(args.old, args.new, as_json=args.json)


def cmd_run(args: argparse.Namespace) -> int:
    from processor.graph import build_topology
    from processor.observability.logging import setup_logging
    from processor.observability.metrics import Metrics
    from processor.runtime.config import load_config
    from processor.runtime.supervisor import follow_supervisor, supervise, tag_member_logs
    from processor.runtime.worker import Worker
    from processor.spec import load_spec
    from processor.spec.bound_overrides import bounded_topics, with_bounds
    from processor.spec.file_overrides import require_topics
    from processor.timeutil import parse_duration_ms
    from processor.tools.backfill import require_backfilled

    loaded = with_bounds(load_spec(args.topology), *_bounds(args))
    require_topics(loaded)
    topology, bounded = build_topology(loaded), bounded_topics(loaded.spec)
    config = load_config(args.config, bootstrap_servers=args.bootstrap_servers,
                         processing_guarantee=args.guarantee, state_dir=args.state_dir,
                         worker_id=args.worker_id, commit_interval_ms=args.commit_interval,
                         metrics_port=args.metrics_port, log_format=args.log_format,
                         group_protocol=args.group_protocol,
                         create_source_topics=args.create_source_topics)
    setup_logging(config.log_level, config.log_format)
    require_backfilled(loaded, config)
    if args.processes != 1:  # N members under this command (runtime/supervisor.py)
        return supervise(args.argv, config, args.processes, topology.source_topics, _port_free)
    member = follow_supervisor()
    if member:
        tag_member_logs(config.resolved_worker_id())
    if config.metrics_port:
        _port_free(config.metrics_port)  # fail before joining the group, not after
    metrics = Metrics()  # served with /healthz, /readyz and /state on config.metrics_port
    idle = parse_duration_ms(args.stop_when_idle) if args.stop_when_idle else None
    worker = Worker(topology, config, stop_when_idle_ms=idle, metrics=metrics, bounded=bounded)
    if sys.stderr.isatty() and not member:  # members share the terminal: no bars
        from processor.observability.logging import attach_status_line
        from processor.observability.progress import ProgressBar

        worker.progress_bar = ProgressBar("restoring state")
        attach_status_line(worker.progress_bar)  # log lines step around the bar
    try:
        code = worker.run()
        open_work = worker.idle_stop.open_work if worker.idle_stop is not None else None
        if open_work is not None and not open_work.empty:
            print(open_work.render(), flush=True)
        return code
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE and config.metrics_port:
            raise _port_in_use(config.metrics_port) from None
        raise
    except RecordError as exc:
        log.error("stopping: a record could not be processed", extra={
            "error": str(exc), "topic": exc.topic, "partition": exc.partition,
            "offset": exc.offset, "step": exc.step})
        return 3


def cmd_test(args: argparse.Namespace) -> int:
    from processor.testing.runner import cmd_test as run_tests

    logging.getLogger("processor").addHandler(logging.NullHandler())  # results say it all
    return run_tests(args.topology, args.tests, args.update, args.cases)


def _port_in_use(port: int) -> ProcessorError:
    return ProcessorError(f"metrics_port {port} is in use (another worker on this host?): choose "
                          "another with --metrics-port or PROCESSOR_METRICS_PORT, or stop the "
                          "process using it")


def _port_free(port: int) -> None:
    import socket

    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the HTTP server binds
        try:
            probe.bind(("", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise _port_in_use(port) from None
            raise


def cmd_dlq(args: argparse.Namespace) -> int:
    from processor.observability.logging import setup_logging
    from processor.runtime.config import load_config
    from processor.tools import dlq

    topology = _load_topology(args.topology)
    config = load_config(args.config, bootstrap_servers=args.bootstrap_servers)
    setup_logging("WARNING", "text")
    if args.dlq_command == "inspect":
        dlq.inspect(topology, config, limit=args.limit, error_class=args.error_class,
                    as_json=args.json)
        return 0
    report = dlq.replay(topology, config, error_class=args.error_class, to=args.to,
                        from_beginning=args.from_beginning, dry_run=args.dry_run)
    verb = "would replay" if args.dry_run else "replayed"
    targets = ", ".join(f"{n} to {t}" for t, n in sorted(report.replayed.items())) or "none"
    print(f"{verb}: {targets}; examined {report.examined}, other error classes "
          f"{report.filtered}, not replayable (derived results) {report.not_replayable}")
    return 0


def cmd_dev_broker(args: argparse.Namespace) -> int:
    import signal

    # block before the broker starts: a SIGTERM arriving at any point is then taken by sigwait,
    # and the `finally` stops the broker child instead of the default action killing only us
    stop_signals = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    if args.kafka == "apache":
        from processor.tools.apache_kafka import KAFKA_VERSION, ApacheKafkaBroker

        data_dir = Path(args.data_dir) if args.data_dir else None
        broker = ApacheKafkaBroker(port=args.port, data_dir=data_dir, install=True)
        what = f"Apache Kafka {KAFKA_VERSION} (KRaft, single node, data in {broker.data_dir})"
    else:
        from processor.tools.broker import EmbeddedBroker

        broker = EmbeddedBroker(port=args.port)
        what = ("Kafka-compatible broker (Tansu, in-memory; run workers with "
                "--group-protocol classic)")
    try:
        broker.start()
        print(f"{what} listening on {broker.bootstrap}; Ctrl-C stops it", flush=True)
        signal.sigwait(stop_signals)
    finally:
        broker.close()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from processor.tools.demo import run_demo

    return run_demo(seconds=args.seconds, rate=args.rate, example=args.example)


def cmd_completion(args: argparse.Namespace) -> int:
    from processor.tools.completion import bash_script

    print(bash_script(build_parser()), end="")
    return 0


TOPOLOGY_HELP = "the topology YAML file"
BOOTSTRAP_HELP = ("Kafka bootstrap servers, host:port[,...] (default: $KAFKA_BOOTSTRAP_SERVERS, "
                  "else the config's bootstrap_servers, 127.0.0.1:9092)")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("processor")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="processor", description=__doc__)
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    v = sub.add_parser("validate", help="check a topology file; exit 0 when valid, 2 when not")
    v.add_argument("topology", help=TOPOLOGY_HELP)
    v.set_defaults(fn=cmd_validate)

    d = sub.add_parser("describe", help="print sub-topologies, repartition topics and stores, "
                                        "or the DAG as a Mermaid or Graphviz picture")
    d.add_argument("topology", help=TOPOLOGY_HELP)
    d.add_argument("--format", choices=["text", "mermaid", "dot"], default="text",
                   help="text, or the DAG as a Mermaid flowchart or a Graphviz digraph "
                        "(default: %(default)s)")
    d.add_argument("--config", help="also print the effective worker configuration of this file "
                                    "(default: none)")
    d.add_argument("--show-config", action="store_true",
                   help="also print the effective worker configuration (defaults + environment; "
                        "default: %(default)s)")
    d.set_defaults(fn=cmd_describe)

    u = sub.add_parser("upgrade-check", help="may NEW run on the state OLD left? exit 0 "
                       "compatible, 3 needs a savepoint migration, 4 incompatible, 2 a bad file")
    u.add_argument("old", metavar="OLD.yaml", help="the topology the state was written by")
    u.add_argument("new", metavar="NEW.yaml", help="the changed topology")
    u.add_argument("--json", action="store_true", help="the verdict, reasons, internal topics "
                   "and both state layouts as JSON (default: %(default)s)")
    u.set_defaults(fn=cmd_upgrade_check)

    r = sub.add_parser("run", help="run a worker for a topology (joins the consumer group)")
    r.add_argument("topology", help=TOPOLOGY_HELP)
    r.add_argument("--config", help="worker config YAML (see config/default.yaml); flags and "
                                    "PROCESSOR_* variables override it (default: none, built-in defaults)")
    r.add_argument("--bootstrap-servers", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"),
                   help=BOOTSTRAP_HELP)
    r.add_argument("--guarantee", choices=["exactly_once", "at_least_once"],
                   help="processing guarantee (default: the config's, exactly_once)")
    r.add_argument("--group-protocol", choices=["consumer", "classic"],
                   help="consumer (default): KIP-848, Apache Kafka >= 4.0; classic: older "
                        "brokers and Tansu (dev-broker's default)")
    r.add_argument("--state-dir", help="where RocksDB stores and checkpoints live "
                                       "(default: the config's state_dir, ./state)")
    r.add_argument("--worker-id", help="this worker's name in logs and group membership "
                                       "(default: the config's, else host name + a hash of the state dir)")
    r.add_argument("--commit-interval", metavar="DURATION",
                   help="commit (and checkpoint) this often, e.g. 100ms, 1s (default: the "
                        "config's commit_interval_ms, 100ms)")
    r.add_argument("--metrics-port", type=int, metavar="PORT",
                   help="serve /metrics /healthz /readyz /state on this port (default: none)")
    r.add_argument("--log-format", choices=["auto", "json", "text"],
                   help="auto: text when stderr is a terminal, JSON otherwise (default: the "
                        "config's log_format or PROCESSOR_LOG_FORMAT, else auto)")
    r.add_argument("--create-source-topics", action="store_true", default=None,
                   help="create a missing source topic whose source declares `partitions:`, "
                        "with that count (default: the config's create_source_topics, off)")
    r.add_argument("--processes", type=int, default=1, metavar="N",
                   help="run N group members under this command, one process each (member i: "
                        "worker id <worker_id>-i, state dir <state_dir>/member-i, HTTP port "
                        "metrics_port + i); signals go to all (default: %(default)s, in-process)")
    r.add_argument("--stop-when-idle", metavar="DURATION",
                   help="bounded run: stop after no input for this long (e.g. 5s), then report "
                        "what stayed open (default: run until stopped)")
    for flag, side in (("--start", "start"), ("--end", "end (exclusive)")):
        r.add_argument(flag, action="append", metavar="SOURCE=POINT",
                       help=f"bound SOURCE's topic range at this {side}, overriding its "
                            "`bounded:`; POINT: earliest, latest, an ISO-8601 time, epoch ms or "
                            "partition:offset,... (repeatable; the run exits when every bounded "
                            "partition reached its end; default: the topology's)")
    r.set_defaults(fn=cmd_run)

    t = sub.add_parser("test", help="run a topology's test file in-process, without a broker; "
                                    "exit 0 all pass, 1 a case fails (diff shown), 2 a bad file")
    t.add_argument("topology", help="the topology YAML file to test")
    t.add_argument("tests", nargs="*", help="test files (default: TOPOLOGY's foo.test.yaml)")
    t.add_argument("--update", action="store_true",
                   help="write the actual outputs as each case's expectation (golden files; "
                        "default: %(default)s)")
    t.add_argument("--case", action="append", dest="cases", metavar="NAME",
                   help="run only the cases of this name, or matching this glob, e.g. "
                        "'totals*' (repeatable; default: all cases)")
    t.set_defaults(fn=cmd_test)

    q = sub.add_parser("dlq", help="inspect or replay the topology's dead-letter topic")
    qsub = q.add_subparsers(dest="dlq_command", required=True)
    qi = qsub.add_parser("inspect", help="print dead letters: error, step, source coordinates, payload")
    qi.add_argument("--limit", type=int, help="print at most this many (default: all)")
    qi.add_argument("--json", action="store_true",
                    help="one JSON object per dead letter (default: %(default)s)")
    qr = qsub.add_parser("replay", help="re-inject dead letters into their source topics "
                                        "(after a fix); progress is kept per topology")
    qr.add_argument("--to", metavar="TOPIC", help="write to this topic instead of the source topic "
                         "(default: each dead letter's source topic)")
    qr.add_argument("--from-beginning", action="store_true",
                    help="ignore the recorded progress and examine every dead letter "
                         "(default: %(default)s)")
    qr.add_argument("--dry-run", action="store_true",
                    help="count what would be replayed (default: %(default)s)")
    for sp in (qi, qr):
        sp.add_argument("topology", help=TOPOLOGY_HELP)
        sp.add_argument("--error-class", help="only dead letters of this error class "
                                              "(e.g. KeyError; default: all)")
        sp.add_argument("--config", help="worker config YAML (default: none)")
        sp.add_argument("--bootstrap-servers", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"),
                        help=BOOTSTRAP_HELP)
        sp.set_defaults(fn=cmd_dlq)

    b = sub.add_parser("dev-broker", help="run a local broker: Tansu (default) or Apache Kafka")
    b.add_argument("--port", type=int, default=9092, help="listen port (default: %(default)s)")
    b.add_argument("--kafka", choices=["tansu", "apache"], default="tansu",
                   help="tansu: embedded, in-memory, no JVM; apache: Apache Kafka in KRaft mode "
                        "(Java >= 17; installed on first use by scripts/install-kafka.sh; "
                        "default: %(default)s)")
    b.add_argument("--data-dir", help="apache: keep the broker's storage here across restarts "
                                      "(default: a temporary directory removed on stop)")
    b.set_defaults(fn=cmd_dev_broker)

    m = sub.add_parser("demo", help="broker + generator + an example topology, printing results")
    m.add_argument("--example", choices=["revenue", "reconciliation", "fraud"], default="revenue",
                   help="revenue: per-user totals; reconciliation: orders vs payments; fraud: "
                        "model scoring + live rules (trains the model on first use; default: "
                        "%(default)s)")
    m.add_argument("--seconds", type=float, default=20,
                   help="how long to run (default: %(default)s)")
    m.add_argument("--rate", type=float, default=None,
                   help="input records per second (default: 2000 revenue, 500 reconciliation, "
                        "200 fraud)")
    m.set_defaults(fn=cmd_demo)
    add_data_tools(sub)
    add_savepoint(sub, TOPOLOGY_HELP)
    add_batch(sub, TOPOLOGY_HELP, BOOTSTRAP_HELP)
    add_backfill(sub, TOPOLOGY_HELP, BOOTSTRAP_HELP)

    c = sub.add_parser("completion", help='print the shell completion script; enable it with '
                                          'eval "$(processor completion bash)"')
    c.add_argument("shell", choices=["bash"], help="the shell (bash)")
    c.set_defaults(fn=cmd_completion)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)  # what --processes members rerun
    try:
        return args.fn(args)
    except SpecErrors as exc:
        for err in exc.errors:
            print(f"error: {err.render()}", file=sys.stderr)
        return 2
    except ProcessorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KafkaException as exc:
        print(f"error: Kafka: {exc.args[0].str()}: check the broker address (--bootstrap-servers, "
              "bootstrap_servers or $KAFKA_BOOTSTRAP_SERVERS) and that the broker is up",
              file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"error: {exc.filename}: no such file", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
