"""Worker configuration: YAML file, PROCESSOR_* / KAFKA_BOOTSTRAP_SERVERS environment, overrides."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from processor.errors import SpecErrors
from processor.runtime.config import WorkerConfig, load_config
from tests.paths import REPO

ROOT = REPO


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """Tests must not see the developer's or CI's settings."""
    for name in list(os.environ):
        if name.upper().startswith("PROCESSOR_") or name.upper() in (
            "KAFKA_BOOTSTRAP_SERVERS", "BOOTSTRAP_SERVERS"
        ):
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str, name: str = "worker.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def config_errors(path=None, **overrides):
    with pytest.raises(SpecErrors) as info:
        load_config(path, **overrides)
    return info.value.errors


def test_defaults_without_file():
    cfg = load_config()
    assert cfg.bootstrap_servers == "127.0.0.1:9092"
    assert cfg.commit_interval_ms == 100
    assert cfg.processing_guarantee == "exactly_once"
    assert cfg.exactly_once is True
    assert cfg.state_dir == Path("state")


def test_file_with_durations(tmp_path):
    path = write(tmp_path, "commit_interval_ms: 250ms\npoll_timeout_ms: 5s\nsession_timeout_ms: 45s\n"
                           "max_poll_interval_ms: 5m\nbatch_size: 500\nprocessing_guarantee: at_least_once\n"
                           "state_dir: /var/lib/proc\nconsumer: {fetch.min.bytes: 1}\n")
    cfg = load_config(path)
    assert cfg.commit_interval_ms == 250
    assert cfg.poll_timeout_ms == 5000
    assert cfg.session_timeout_ms == 45_000
    assert cfg.max_poll_interval_ms == 300_000
    assert cfg.batch_size == 500
    assert cfg.exactly_once is False
    assert cfg.state_dir == Path("/var/lib/proc")
    assert cfg.consumer == {"fetch.min.bytes": 1}


def test_numeric_durations_are_milliseconds(tmp_path):
    assert load_config(write(tmp_path, "commit_interval_ms: 75\n")).commit_interval_ms == 75


def test_shipped_default_config_loads():
    cfg = load_config(ROOT / "config" / "default.yaml")
    assert cfg.commit_interval_ms == 100
    assert cfg.max_poll_interval_ms == 300_000
    assert cfg.session_timeout_ms == 45_000


def test_empty_file_gives_defaults(tmp_path):
    assert load_config(write(tmp_path, "")).commit_interval_ms == 100


def test_env_commit_interval_is_honoured(monkeypatch):
    monkeypatch.setenv("PROCESSOR_COMMIT_INTERVAL_MS", "250ms")
    assert load_config().commit_interval_ms == 250


def test_env_applies_to_keys_the_file_does_not_set(tmp_path, monkeypatch):
    monkeypatch.setenv("PROCESSOR_COMMIT_INTERVAL_MS", "2s")
    cfg = load_config(write(tmp_path, "batch_size: 7\n"))
    assert (cfg.commit_interval_ms, cfg.batch_size) == (2000, 7)


def test_env_beats_file(tmp_path, monkeypatch):
    monkeypatch.setenv("PROCESSOR_COMMIT_INTERVAL_MS", "250ms")
    assert load_config(write(tmp_path, "commit_interval_ms: 1s\n")).commit_interval_ms == 250


def test_kafka_bootstrap_servers_env_is_honoured(monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka-1:9092,kafka-2:9092")
    assert load_config().bootstrap_servers == "kafka-1:9092,kafka-2:9092"


def test_processor_bootstrap_servers_env_is_honoured(monkeypatch):
    monkeypatch.setenv("PROCESSOR_BOOTSTRAP_SERVERS", "p:1")
    assert load_config().bootstrap_servers == "p:1"


def test_overrides_beat_file_and_env_and_none_is_ignored(tmp_path, monkeypatch):
    monkeypatch.setenv("PROCESSOR_BATCH_SIZE", "3")
    path = write(tmp_path, "commit_interval_ms: 1s\nbootstrap_servers: file:1\n")
    cfg = load_config(path, commit_interval_ms="100ms", bootstrap_servers=None, batch_size=9)
    assert cfg.commit_interval_ms == 100
    assert cfg.bootstrap_servers == "file:1"
    assert cfg.batch_size == 9


def test_unrelated_processor_env_vars_are_ignored(monkeypatch):
    # e.g. Kubernetes service links inject PROCESSOR_PORT for a service named `processor`
    monkeypatch.setenv("PROCESSOR_PORT", "tcp://10.0.0.1:80")
    monkeypatch.setenv("PROCESSOR_SERVICE_HOST", "10.0.0.1")
    assert load_config().commit_interval_ms == 100


# -- errors name file, line and field ---------------------------------------------------------


def test_unknown_key(tmp_path):
    path = write(tmp_path, "batch_size: 10\ncolour: red\n")
    (err,) = config_errors(path)
    assert (err.file, err.line, err.path, err.message) == (str(path), 2, "colour", "unknown setting")


def test_bad_values(tmp_path):
    path = write(tmp_path, "batch_size: 10\ncommit_interval_ms: soon\nprocessing_guarantee: maybe\n"
                           "metrics_port: 70000\n")
    errs = {e.path: e for e in config_errors(path)}
    assert set(errs) == {"commit_interval_ms", "processing_guarantee", "metrics_port"}
    assert all(e.file == str(path) for e in errs.values())
    assert errs["commit_interval_ms"].line == 2
    assert "not a duration: 'soon'" in errs["commit_interval_ms"].message
    assert errs["processing_guarantee"].line == 3
    assert "'exactly_once' or 'at_least_once'" in errs["processing_guarantee"].message
    assert errs["metrics_port"].line == 4


def test_value_below_minimum(tmp_path):
    path = write(tmp_path, "\n\ncommit_interval_ms: 5ms\n")
    (err,) = config_errors(path)
    assert (err.file, err.line, err.path) == (str(path), 3, "commit_interval_ms")
    assert "greater than or equal to 10" in err.message


def test_error_renders_with_file_line_field(tmp_path):
    path = write(tmp_path, "colour: red\n")
    (err,) = config_errors(path)
    assert err.render() == f"{path}:1: colour: unknown setting"


def test_bad_env_value_is_attributed_to_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("PROCESSOR_BATCH_SIZE", "0")
    (err,) = config_errors(write(tmp_path, "commit_interval_ms: 1s\n"))
    assert (err.file, err.line, err.path) == ("env", None, "batch_size")


def test_yaml_syntax_error(tmp_path):
    path = write(tmp_path, "batch_size: 1\nconsumer: {a: [1\n")
    (err,) = config_errors(path)
    assert err.file == str(path)
    assert err.message.startswith("YAML syntax error")
    assert err.line is not None and err.line >= 2


def test_non_mapping_file(tmp_path):
    path = write(tmp_path, "- a\n- b\n")
    (err,) = config_errors(path)
    assert (err.file, err.line, err.message) == (str(path), 1, "config must be a YAML mapping")


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    (err,) = config_errors(path)
    assert err.file == str(path)
    assert err.message.startswith("cannot read config")


# -- worker id -----------------------------------------------------------------------------------


def test_worker_id_is_stable_for_the_same_state_dir(tmp_path, monkeypatch):
    a = load_config(state_dir=tmp_path / "a").resolved_worker_id()
    assert a == load_config(state_dir=tmp_path / "a").resolved_worker_id()
    assert a.startswith(socket.gethostname() + "-")
    # equivalent spellings of one directory are one worker
    monkeypatch.chdir(tmp_path)
    assert load_config(state_dir="a").resolved_worker_id() == a
    assert load_config(state_dir="./x/../a").resolved_worker_id() == a


def test_worker_id_differs_for_different_state_dirs(tmp_path):
    ids = {load_config(state_dir=tmp_path / d).resolved_worker_id() for d in ("a", "b", "c")}
    assert len(ids) == 3


def test_explicit_worker_id_wins(tmp_path):
    assert load_config(state_dir=tmp_path, worker_id="w-7").resolved_worker_id() == "w-7"
    assert WorkerConfig(worker_id="w-8").resolved_worker_id() == "w-8"


def test_bad_flag_value_is_attributed_to_the_command_line(tmp_path):
    (err,) = config_errors(write(tmp_path, "batch_size: 5\n"), commit_interval_ms="soon")
    assert (err.file, err.line, err.path) == ("command line", None, "commit_interval_ms")


# -- security, `kafka:` properties, schema registry ----------------------------------------------


def test_security_settings_from_env(monkeypatch):
    monkeypatch.setenv("PROCESSOR_SECURITY_PROTOCOL", "sasl_plaintext")
    monkeypatch.setenv("PROCESSOR_SASL_MECHANISM", "plain")
    monkeypatch.setenv("PROCESSOR_SASL_USERNAME", "svc")
    monkeypatch.setenv("PROCESSOR_SASL_PASSWORD", "pw")
    monkeypatch.setenv("PROCESSOR_SCHEMA_REGISTRY_URL", "http://registry:8081")
    cfg = load_config()
    assert (cfg.security_protocol, cfg.sasl_mechanism) == ("SASL_PLAINTEXT", "PLAIN")
    assert cfg.sasl_password is not None and cfg.sasl_password.get_secret_value() == "pw"
    assert "pw" not in repr(cfg)
    assert cfg.client_properties() == {
        "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
        "sasl.username": "svc", "sasl.password": "pw"}
    assert cfg.schema_registry_url == "http://registry:8081"


def test_kafka_properties_from_file_are_text(tmp_path):
    cfg = load_config(write(tmp_path, "kafka:\n  linger.ms: 5\n  socket.keepalive.enable: true\n"
                                      "  client.id: w1\n"))
    assert cfg.kafka == {"linger.ms": "5", "socket.keepalive.enable": "true", "client.id": "w1"}


def test_kafka_properties_from_env_json_replace_the_file_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("PROCESSOR_KAFKA", '{"client.id": "from-env"}')
    cfg = load_config(write(tmp_path, "kafka: {client.id: from-file, linger.ms: 5}\n"))
    assert cfg.kafka == {"client.id": "from-env"}


def test_kafka_property_errors_name_the_property(tmp_path):
    path = write(tmp_path, "batch_size: 1\nkafka:\n  linger.ms: [5]\n")
    (err,) = config_errors(path)
    assert (err.file, err.line, err.path) == (str(path), 2, "kafka.linger.ms")
    path = write(tmp_path, "kafka: {group.id: mine}\n")
    (err,) = config_errors(path)
    assert (err.line, err.path) == (1, "kafka")
    assert "group.id cannot be set here" in err.message


def test_unknown_security_protocol(tmp_path):
    (err,) = config_errors(write(tmp_path, "security_protocol: tls\n"))
    assert (err.line, err.path) == (1, "security_protocol")
    assert "'SASL_SSL'" in err.message


def test_changelog_topic_configs_and_purge_interval(tmp_path, monkeypatch):
    cfg = load_config(write(tmp_path, "changelog_topic_configs: {segment.ms: 60000}\n"
                                      "repartition_purge_interval_ms: 1m\n"))
    assert cfg.changelog_topic_configs == {"segment.ms": "60000"}  # topic configs are text
    assert cfg.repartition_purge_interval_ms == 60_000
    assert load_config().repartition_purge_interval_ms == 30_000  # Kafka Streams' default
    monkeypatch.setenv("PROCESSOR_CHANGELOG_TOPIC_CONFIGS", '{"min.cleanable.dirty.ratio": "0.1"}')
    assert load_config().changelog_topic_configs == {"min.cleanable.dirty.ratio": "0.1"}


def test_changelog_topic_configs_cannot_stop_compaction(tmp_path):
    [err] = config_errors(write(tmp_path, "changelog_topic_configs: {cleanup.policy: delete}\n"))
    assert err.path == "changelog_topic_configs" and "compact" in err.message
    ok = load_config(write(tmp_path, "changelog_topic_configs: {cleanup.policy: 'compact,delete'}\n"))
    assert ok.changelog_topic_configs["cleanup.policy"] == "compact,delete"


def test_group_protocol_selects_incremental_assignment_either_way():
    from processor.runtime.kafka.clients import consumer_config

    kip848 = consumer_config(load_config(), "g")
    assert kip848["group.protocol"] == "consumer"
    assert kip848["group.remote.assignor"] == "range"  # partition N of every input together
    # librdkafka refuses the classic-only properties under KIP-848: the broker owns them
    assert not {"session.timeout.ms", "heartbeat.interval.ms",
                "partition.assignment.strategy"} & kip848.keys()
    classic = consumer_config(load_config(group_protocol="classic", session_timeout_ms="6s"), "g")
    assert classic["partition.assignment.strategy"] == "cooperative-sticky"
    assert classic["session.timeout.ms"] == 6000
    assert classic["heartbeat.interval.ms"] == 1500
