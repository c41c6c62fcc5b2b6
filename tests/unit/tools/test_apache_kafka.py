"""The Apache Kafka broker settings, checked without starting it."""

from __future__ import annotations

import re

from processor.tools.apache_kafka import KAFKA_VERSION, ROOT, SETTINGS


def test_pinned_version_is_the_one_the_install_script_resolves():
    pom = (ROOT / "scripts" / "kafka" / "pom.xml").read_text()
    assert re.search(r"<kafka.version>(.*)</kafka.version>", pom).group(1) == KAFKA_VERSION


def test_single_node_settings():
    # one node: internal topics cannot ask for 3 replicas, groups form at once
    for key in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor",
                "transaction.state.log.min.isr", "share.coordinator.state.topic.replication.factor"):
        assert SETTINGS[key] == "1", key
    assert SETTINGS["group.initial.rebalance.delay.ms"] == "0"
    assert SETTINGS["process.roles"] == "broker,controller"


def test_cache_directory_is_git_ignored():
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert "/.kafka/" in ignored
