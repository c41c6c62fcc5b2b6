"""Secrets reach librdkafka in clear and nothing else: masked settings, logs, config errors."""

from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path

import pytest

from processor import secrets
from processor.errors import SpecErrors
from processor.observability.logging import JsonFormatter, TextFormatter, setup_logging
from processor.runtime.config import load_config
from processor.runtime.kafka.clients import (
    admin_config,
    consumer_config,
    producer_config,
    restore_consumer_config,
)
from tests.paths import REPO

SASL = "sasl-pw-Q7x!"
KEY_PW = "key-pw-9z$"
OAUTH = "oauth-secret-4k"
KEYSTORE = "keystore-pw-2m"
REGISTRY_URL_PW = "url:pw@3"  # percent-encoded in the URL below
REGISTRY_PW = "registry-pw-from-env-8c"
ALL = (SASL, KEY_PW, OAUTH, KEYSTORE, REGISTRY_URL_PW, REGISTRY_PW)

CONFIG = f"""\
bootstrap_servers: broker:9093
security_protocol: sasl_ssl
sasl_mechanism: SCRAM-SHA-512
sasl_username: svc-orders
sasl_password: "{SASL}"
ssl_ca_location: /etc/kafka/ca.pem
ssl_key_password: "{KEY_PW}"
kafka:
  sasl.oauthbearer.client.secret: "{OAUTH}"
  client.id: orders-worker
  linger.ms: 20
consumer:
  ssl.keystore.password: "{KEYSTORE}"
  fetch.min.bytes: 10
schema_registry_url: "http://reg-user:url%3Apw%403@registry:8081"
"""


@pytest.fixture(autouse=True)
def isolated(monkeypatch):
    """No developer settings, and an empty registry of secrets for each test."""
    for name in list(os.environ):
        if name.upper().startswith("PROCESSOR_") or name.upper() == "KAFKA_BOOTSTRAP_SERVERS":
            monkeypatch.delenv(name)
    monkeypatch.setattr(secrets, "_secrets", frozenset())
    monkeypatch.setattr(secrets, "_registered", ())


@pytest.fixture
def config(tmp_path, monkeypatch):
    path = tmp_path / "worker.yaml"
    path.write_text(CONFIG)
    monkeypatch.setenv("PROCESSOR_SCHEMA_REGISTRY_PASSWORD", REGISTRY_PW)
    return load_config(path)


def assert_no_secret(text: str) -> None:
    leaked = [s for s in ALL if s in text]
    assert not leaked, f"secrets {leaked} in:\n{text}"


# -- which values are secret ----------------------------------------------------------------------


def test_secret_values_of_a_config(config):
    assert secrets.secret_values(config) == set(ALL) | {"url%3Apw%403"}


def test_secret_names():
    for name in ("sasl.password", "ssl.key.password", "sasl.oauthbearer.client.secret",
                 "ACCESS_TOKEN", "aws.credentials", "ssl.key.pem", "private.key"):
        assert secrets.is_secret_name(name), name
    for name in ("sasl.username", "ssl.key.location", "client.id", "linger.ms"):
        assert not secrets.is_secret_name(name), name


def test_url_passwords_as_written_and_decoded():
    assert secrets.url_passwords("http://u:p%40ss@host:8081,https://v:w@other") == {
        "p%40ss", "p@ss", "w"}
    assert secrets.url_passwords("http://host:8081") == set()
    assert secrets.url_passwords("http://u:x%21@[::1") == {"x%21", "x!"}  # unparsable host


# -- masked settings ------------------------------------------------------------------------------


def test_masked_shows_stars_never_the_secret(config):
    masked = config.masked()
    assert_no_secret(json.dumps(masked))
    assert masked["sasl_password"] == masked["ssl_key_password"] == "***"
    assert masked["schema_registry_password"] == "***"
    assert masked["kafka"]["sasl.oauthbearer.client.secret"] == "***"
    assert masked["consumer"]["ssl.keystore.password"] == "***"
    assert masked["schema_registry_url"] == "http://reg-user:***@registry:8081"
    # everything else is shown as is: masked() is for reading the effective settings
    assert masked["sasl_username"] == "svc-orders"
    assert masked["security_protocol"] == "SASL_SSL"
    assert masked["kafka"]["linger.ms"] == "20"
    assert masked["consumer"]["fetch.min.bytes"] == 10
    assert masked["state_dir"] == "state"


def test_masked_leaves_unset_secrets_unset():
    masked = load_config().masked()
    assert masked["sasl_password"] is None
    assert masked["kafka"] == {}


# -- clients get the real values ------------------------------------------------------------------


def test_clients_get_the_real_secrets(config):
    for conf in (consumer_config(config, "g"), producer_config(config, "t-1"),
                 admin_config(config), restore_consumer_config(config)):
        assert conf["security.protocol"] == "SASL_SSL"
        assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
        assert conf["sasl.username"] == "svc-orders"
        assert conf["sasl.password"] == SASL
        assert conf["ssl.key.password"] == KEY_PW
        assert conf["ssl.ca.location"] == "/etc/kafka/ca.pem"
        assert conf["sasl.oauthbearer.client.secret"] == OAUTH
        assert conf["client.id"] == "orders-worker"
        assert conf["bootstrap.servers"] == "broker:9093"
    # `consumer:` security overrides reach the helper clients too, other overrides do not
    assert consumer_config(config, "g")["ssl.keystore.password"] == KEYSTORE
    assert restore_consumer_config(config)["ssl.keystore.password"] == KEYSTORE
    assert "fetch.min.bytes" not in admin_config(config)


def test_client_layering(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text("kafka: {linger.ms: 50, auto.offset.reset: latest, enable.auto.commit: true,"
                    " fetch.wait.max.ms: 100}\nproducer: {linger.ms: 1}\n"
                    "consumer: {fetch.wait.max.ms: 7}\n")
    config = load_config(path)
    assert producer_config(config, None)["linger.ms"] == 1  # per-client override wins
    consumer = consumer_config(config, "g")
    assert consumer["fetch.wait.max.ms"] == 7
    assert consumer["auto.offset.reset"] == "latest"  # kafka beats a tuned default
    assert consumer["enable.auto.commit"] is False  # but not what correctness needs
    restore = restore_consumer_config(config)
    assert restore["auto.offset.reset"] == "earliest"
    assert restore["fetch.wait.max.ms"] == "100"


# -- logs -----------------------------------------------------------------------------------------


def _logger(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    handler.addFilter(secrets.RedactingFilter())
    log = logging.getLogger(f"test.secrets.{id(out)}")
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.INFO)
    return log, out


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()], ids=["json", "text"])
def test_log_filter_redacts_message_args_extras_and_exceptions(config, formatter):
    log, out = _logger(formatter)
    log.info("connecting with %s", SASL)
    log.info(f"librdkafka said: sasl.password={SASL} ssl.key.password={KEY_PW}")
    log.warning("settings", extra={"conf": {"sasl.password": SASL, "nested": [OAUTH]},
                                   "url": f"http://u:{REGISTRY_PW}@r", "n": 3})
    try:
        raise RuntimeError(f"auth failed for password {KEYSTORE}")
    except RuntimeError:
        log.exception("client error")
    text = out.getvalue()
    assert_no_secret(text)
    assert text.count("***") >= 7
    if isinstance(formatter, JsonFormatter):
        lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        assert lines[2]["conf"] == {"sasl.password": "***", "nested": ["***"]}
        assert lines[2]["n"] == 3
        assert "RuntimeError: auth failed for password ***" in lines[3]["exc"]


def test_secret_with_quotes_is_masked_in_json_lines():
    tricky = 'pa"ss\\word'
    secrets.register({tricky})
    log, out = _logger(JsonFormatter())
    log.info("x", extra={"obj": type("O", (), {"__str__": lambda self: tricky})()})
    log.info("raw %r", tricky)
    log.handlers[0].filters.clear()  # the formatter alone still masks JSON-escaped forms
    log.info("as text %s", {"a": tricky})
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert records[0]["obj"] == "***"
    assert [r["msg"] for r in records] == ["x", "raw '***'", "as text {'a': '***'}"]


def test_setup_logging_installs_the_filter(config, capsys):
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging("INFO", "json")
        logging.getLogger("processor.worker").info("worker started", extra={
            "config": {"sasl.password": SASL}})
        err = capsys.readouterr().err
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    assert "worker started" in err
    assert_no_secret(err)


def test_redact_masks_longest_first_and_ignores_blank_values():
    assert secrets.redact("token abc and abcdef", {"abc", "abcdef", "", "  "}) == (
        "token *** and ***")
    assert secrets.redact("nothing registered") == "nothing registered"


# -- config errors --------------------------------------------------------------------------------


def _errors(path: Path) -> str:
    with pytest.raises(SpecErrors) as info:
        load_config(path)
    return str(info.value)


def test_validation_errors_never_show_a_secret(tmp_path, monkeypatch):
    path = tmp_path / "worker.yaml"
    path.write_text(f"batch_size: zero\nsasl_password: \"{SASL}\"\nsecurity_protocol: tls\n"
                    f"kafka: {{sasl.password: \"{OAUTH}\", linger.ms: [1]}}\n"
                    f"session_timeout_ms: \"{KEY_PW}\"\nssl_key_password: \"{KEY_PW}\"\n")
    text = _errors(path)
    assert_no_secret(text)
    assert f"{path}:1: batch_size:" in text
    assert f"{path}:3: security_protocol:" in text
    assert f"{path}:4: kafka.linger.ms:" in text
    # a secret pasted into the wrong setting is masked in that setting's error
    assert f"{path}:5: session_timeout_ms: not a duration: '***'" in text


def test_kafka_property_set_twice_names_it_without_its_value(tmp_path):
    path = tmp_path / "worker.yaml"
    path.write_text(f"sasl_password: other-pw\nkafka:\n  sasl.password: \"{SASL}\"\n")
    text = _errors(path)
    assert f"{path}:2: kafka: sasl.password is also set as sasl_password" in text
    assert_no_secret(text)


def test_env_secret_with_invalid_json_is_not_echoed(monkeypatch):
    monkeypatch.setenv("PROCESSOR_KAFKA", f'{{"sasl.password": "{SASL}", oops}}')
    with pytest.raises(SpecErrors) as info:
        load_config()
    (err,) = info.value.errors
    assert err.render() == "env: kafka: PROCESSOR_KAFKA must be a JSON object"


def test_env_secret_in_bad_setting_is_masked(monkeypatch):
    monkeypatch.setenv("PROCESSOR_SASL_PASSWORD", SASL)
    monkeypatch.setenv("PROCESSOR_COMMIT_INTERVAL_MS", SASL)
    with pytest.raises(SpecErrors) as info:
        load_config()
    (err,) = info.value.errors
    assert (err.file, err.path) == ("env", "commit_interval_ms")
    assert_no_secret(err.render())


def test_loading_registers_secrets_for_redact(config):
    assert secrets.redact(f"x {SASL} y {REGISTRY_PW}") == "x *** y ***"


def test_describe_shows_the_config_with_secrets_masked(tmp_path, monkeypatch, capsys):
    from processor.cli import main

    cfg = tmp_path / "worker.yaml"
    cfg.write_text("sasl_username: svc\nkafka: {ssl.key.password: file-secret-77}\n")
    monkeypatch.setenv("PROCESSOR_SASL_PASSWORD", "env-secret-99")
    monkeypatch.setenv("PROCESSOR_SCHEMA_REGISTRY_URL", "http://reg:url-secret-55@registry:8081")
    root = REPO
    assert main(["describe", str(root / "topologies" / "revenue_per_user.yaml"),
                 "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "Sub-topology 0" in out and "sasl_username: svc" in out
    assert "sasl_password: '***'" in out and "http://reg:***@registry:8081" in out
    for secret in ("file-secret-77", "env-secret-99", "url-secret-55"):
        assert secret not in out
