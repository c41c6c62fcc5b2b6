"""A single-node Apache Kafka broker (KRaft, combined broker and controller) that the project
starts itself: the reference broker the tests prove every guarantee on, and
`processor dev-broker --kafka apache` for local work.

The jars come from Maven Central through `scripts/install-kafka.sh` (cached in
`.kafka/<version>/lib`, or `PROCESSOR_KAFKA_LIB`). Storage is formatted once in a data directory;
`kill()` then `start()` restarts the broker on the same log directories and port, which is how
the fault campaign crashes it. Settings are those of one node (replication factor and min ISR 1
for internal topics), with no initial rebalance delay and fast transaction and log-cleaner
timers so tests see aborts and compaction within seconds.
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from processor.tools.broker import BrokerError, free_port, port_in_use

KAFKA_VERSION = "4.1.1"  # keep equal to scripts/kafka/pom.xml (a unit test checks)
ROOT = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = ROOT / "scripts" / "install-kafka.sh"

# librdkafka's "connection refused" while the broker is still starting says nothing useful
_QUIET = logging.getLogger("processor.broker.readiness")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False

SETTINGS = {
    "process.roles": "broker,controller",
    "node.id": "1",
    "controller.listener.names": "CONTROLLER",
    "inter.broker.listener.name": "PLAINTEXT",
    "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
    "num.partitions": "1",
    "auto.create.topics.enable": "true",
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "10",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "10",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "group.initial.rebalance.delay.ms": "0",
    "group.min.session.timeout.ms": "1000",
    # KIP-848 groups (the workers' default protocol): a dead member's partitions move after
    # 6 s instead of 45 s, so crash tests need not wait; production brokers keep 45 s
    "group.consumer.min.session.timeout.ms": "1000",
    "group.consumer.session.timeout.ms": "6000",
    "group.consumer.min.heartbeat.interval.ms": "500",
    "group.consumer.heartbeat.interval.ms": "500",
    "transaction.abort.timed.out.transaction.cleanup.interval.ms": "2000",
    "transaction.remove.expired.transaction.cleanup.interval.ms": "60000",
    "log.cleaner.backoff.ms": "500",
    # no time retention: test and demo data carries event times years old, which the default
    # 7 days would delete (active segment included) at the next retention check
    "log.retention.ms": "-1",
    "log.segment.delete.delay.ms": "1000",
    "file.delete.delay.ms": "1000",
}

LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.file.ref = file
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = info
"""


def kafka_lib(*, install: bool = False) -> Path:
    """The directory of the broker's jars; with `install`, run the install script if absent."""
    override = os.environ.get("PROCESSOR_KAFKA_LIB")
    if override:
        return Path(override)
    lib = ROOT / ".kafka" / KAFKA_VERSION / "lib"
    if not (lib / ".complete").exists() and install and INSTALL_SCRIPT.exists():
        done = subprocess.run(["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True)
        if done.returncode != 0:
            raise BrokerError(done.stderr.strip() or f"{INSTALL_SCRIPT} failed")
    if not (lib / ".complete").exists():
        raise BrokerError(f"Apache Kafka {KAFKA_VERSION} is not installed: run "
                          f"scripts/install-kafka.sh (or set PROCESSOR_KAFKA_LIB)")
    return lib


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java:
        raise BrokerError("Apache Kafka needs Java >= 17 and 'java' is not on PATH")
    return java


class ApacheKafkaBroker:
    """One KRaft node on 127.0.0.1:<port>; use as a context manager, or start/stop/kill."""

    kind = "apache-kafka"

    def __init__(self, port: int | None = None, *, data_dir: Path | None = None,
                 log_file: Path | None = None, settings: dict[str, str] | None = None,
                 heap: str = "768m", install: bool = False) -> None:
        self.port = port or free_port()
        self.controller_port = free_port()
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="processor-kafka-"))
        self.log_file = log_file or self.data_dir / "server.log"
        self.settings = {**SETTINGS, **(settings or {})}
        self.heap = heap
        self.lib = kafka_lib(install=install)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    def _properties(self) -> Path:
        path = self.data_dir / "server.properties"
        props = {
            **self.settings,
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "log.dirs": str(self.log_dir),
        }
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        return path

    def _java_cmd(self, main: str, *args: str) -> list[str]:
        log4j = self.data_dir / "log4j2.properties"
        log4j.write_text(LOG4J2.format(log=self.log_file, level="INFO"))
        return [_java(), "-Xms128m", f"-Xmx{self.heap}", "-XX:+UseG1GC",
                "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={log4j}",
                "-cp", f"{self.lib}/*", main, *args]

    def _format(self, props: Path) -> None:
        if (self.log_dir / "meta.properties").exists():
            return
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        done = subprocess.run(self._java_cmd("kafka.tools.StorageTool", "format",
                                             # `=`: an id may start with "-"
                                             f"--cluster-id={cluster_id}", "-c", str(props)),
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise BrokerError(f"formatting Kafka storage in {self.log_dir} failed: "
                              f"{(done.stderr or done.stdout).strip()[-400:]}")

    def start(self, timeout: float = 90.0) -> ApacheKafkaBroker:
        for port in (self.port, self.controller_port):
            if port_in_use(port):
                raise BrokerError(f"port {port} on 127.0.0.1 is already in use")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        props = self._properties()
        self._format(props)
        out = open(self.data_dir / "stdout.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(self._java_cmd("kafka.Kafka", str(props)), stdout=out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        """Ready = our process alive and it answers metadata with itself as a broker."""
        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + timeout
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "logger": _QUIET})
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                tail = (self.data_dir / "stdout.log").read_text(errors="replace")[-800:]
                raise BrokerError(f"Apache Kafka exited with code {self.proc.returncode} on "
                                  f"start (logs: {self.log_file}):\n{tail}")
            try:
                md = admin.list_topics(timeout=1)
                if md.brokers and md.controller_id >= 0:
                    return
            except Exception:  # not up yet
                pass
            time.sleep(0.2)
        self.stop()
        raise BrokerError(f"Apache Kafka did not become ready on {self.bootstrap} within "
                          f"{timeout:.0f}s (logs: {self.log_file})")

    def kill(self) -> None:
        """kill -9 the broker; the log directories stay for a `start()` on them."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> ApacheKafkaBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
