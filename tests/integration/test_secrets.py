"""A real `processor run` with secrets configured: the topology runs (librdkafka accepts the
properties) and no secret appears in anything the process writes. librdkafka writes to stderr
itself, outside Python logging: `debug: conf` makes it dump every client's properties, so the
test also sees that it redacts the secrets it was given."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from processor.tools.generator import create_topic, produce_json
from tests.integration.kafka import ROOT, read_all

pytestmark = pytest.mark.integration

ENV_SECRET = "env-sasl-pw-5d1f"
KAFKA_SECRET = "kafka-key-pw-77ab"
REGISTRY_SECRET = "registry-pw-c3e9"

TOPOLOGY = """\
name: secrets-{u}
sources:
  orders: {{topic: orders-{u}, key: {{format: string}}, value: {{format: json}}}}
pipelines:
  - from: orders
    steps:
      - filter: "value['amount'] > 1"
      - to: {{topic: big-{u}, partitions: 1}}
"""

CONFIG = f"""\
security_protocol: PLAINTEXT
kafka:
  ssl.key.password: "{KAFKA_SECRET}"
  client.id: secrets-test
  debug: conf
schema_registry_url: "http://svc:{REGISTRY_SECRET}@127.0.0.1:1"
"""


def test_run_with_secrets_never_prints_them(broker, tmp_path: Path, unique: str):
    topology = tmp_path / "topology.yaml"
    topology.write_text(TOPOLOGY.format(u=unique))
    config = tmp_path / "worker.yaml"
    config.write_text(CONFIG)
    create_topic(broker.bootstrap, f"orders-{unique}", 1)
    produce_json(broker.bootstrap, f"orders-{unique}",
                 [(f"o{i}", {"amount": i}) for i in range(10)])
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROCESSOR_")}
    env.update(PROCESSOR_SASL_PASSWORD=ENV_SECRET, PROCESSOR_SESSION_TIMEOUT_MS="6000",
               PROCESSOR_MAX_POLL_INTERVAL_MS="6000")  # as WorkerProcess: a quick group join
    proc = subprocess.run(
        [sys.executable, "-m", "processor", "run", str(topology), "--config", str(config),
         "--bootstrap-servers", broker.bootstrap, "--state-dir", str(tmp_path / "state"),
         "--guarantee", "at_least_once", "--log-format", "text", "--stop-when-idle", "2s"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    for secret in (ENV_SECRET, KAFKA_SECRET, REGISTRY_SECRET):
        assert secret not in output, f"{secret!r} leaked:\n{output[-4000:]}"
    # the secrets reached librdkafka (which prints them redacted)
    assert "sasl.password = [redacted]" in output
    assert "ssl.key.password = [redacted]" in output
    assert len(read_all(broker.bootstrap, f"big-{unique}")) == 8  # the run did its work
