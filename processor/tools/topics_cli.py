"""`processor topics create | list | describe`: the topics a topology reads, without Kafka's scripts.

The tools connect with the worker's settings (config file < PROCESSOR_* environment < flags),
so a secured cluster needs nothing new. A broker that does not answer is one error line.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from processor.errors import ProcessorError
from processor.runtime.config import WorkerConfig
from processor.runtime.kafka.clients import admin_config
from processor.runtime.kafka.topics import create_command

TIMEOUT_S = 10.0


class BrokerError(ProcessorError):
    """The broker could not be reached or refused a request."""


def broker_error(exc: KafkaException, config: WorkerConfig, doing: str) -> BrokerError:
    err = exc.args[0]
    text = err.str() if isinstance(err, KafkaError) else str(err)
    return BrokerError(f"{doing}: {text} (broker {config.bootstrap_servers}: is it up? set "
                       "--bootstrap-servers or bootstrap_servers to the right address)")


def _admin(config: WorkerConfig) -> AdminClient:
    return AdminClient(admin_config(config))


def topic_partitions(admin: AdminClient, config: WorkerConfig,
                     topic: str | None = None) -> dict[str, int]:
    try:
        md = admin.list_topics(topic, timeout=TIMEOUT_S)
    except KafkaException as exc:
        raise broker_error(exc, config, "cannot read the cluster metadata") from None
    return {name: len(t.partitions) for name, t in md.topics.items() if t.error is None}


def existing_topic(client: Any, config: WorkerConfig, topic: str) -> Any:
    """`topic`'s metadata (a TopicMetadata) through any client's `list_topics`, or one error line:
    the broker unreachable, or the topic missing with the command that creates it."""
    try:
        md = client.list_topics(topic, timeout=TIMEOUT_S)
    except KafkaException as exc:
        raise broker_error(exc, config, "cannot read the cluster metadata") from None
    meta = md.topics.get(topic)
    if meta is None or meta.error is not None:
        raise ProcessorError(f"topic {topic!r} does not exist; create it: "
                             f"{create_command(topic, config.bootstrap_servers)}")
    return meta


def create(config: WorkerConfig, topic: str, *, partitions: int, replication_factor: int,
           configs: dict[str, str], out: TextIO = sys.stdout) -> int:
    admin = _admin(config)
    topic_partitions(admin, config)  # reachable? (one error line instead of a create timeout)
    new = NewTopic(topic, partitions, replication_factor, config=configs)
    try:
        admin.create_topics([new], operation_timeout=30)[topic].result()
    except KafkaException as exc:
        err = exc.args[0]
        if err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
            raise ProcessorError(f"topic {topic!r} already exists (`processor topics describe "
                                 f"{topic}` shows it)") from None
        raise broker_error(exc, config, f"cannot create topic {topic!r}") from None
    print(f"created {topic}: {partitions} partition{'s' if partitions != 1 else ''}, "
          f"replication factor {'broker default' if replication_factor < 0 else replication_factor}"
          + (f", {', '.join(f'{k}={v}' for k, v in sorted(configs.items()))}" if configs else ""),
          file=out)
    return 0


def list_topics(config: WorkerConfig, *, internal: bool = False, out: TextIO = sys.stdout) -> int:
    counts = topic_partitions(_admin(config), config)
    for name in sorted(counts):
        if internal or not name.startswith("__"):
            print(f"{name}\t{counts[name]}", file=out)
    return 0


def describe(config: WorkerConfig, topic: str, out: TextIO = sys.stdout) -> int:
    admin = _admin(config)
    meta = existing_topic(admin, config, topic)
    replicas = {len(p.replicas) for p in meta.partitions.values()}
    print(f"topic {topic}: {len(meta.partitions)} partitions, replication factor "
          f"{', '.join(map(str, sorted(replicas)))}", file=out)
    for p in sorted(meta.partitions):
        part = meta.partitions[p]
        print(f"  partition {p}: leader {part.leader}, replicas {list(part.replicas)}, "
              f"in sync {list(part.isrs)}", file=out)
    resource = ConfigResource(ResourceType.TOPIC, topic)
    try:
        entries = admin.describe_configs([resource])[resource].result(timeout=TIMEOUT_S)
    except KafkaException as exc:
        raise broker_error(exc, config, f"cannot read the configs of {topic!r}") from None
    changed = {k: e.value for k, e in entries.items() if not e.is_default}
    print("  configs: " + (", ".join(f"{k}={v}" for k, v in sorted(changed.items()))
                           or "broker defaults"), file=out)
    return 0


def parse_configs(items: list[str]) -> dict[str, str]:
    """`--topic-config NAME=VALUE` flags."""
    configs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ProcessorError(f"--topic-config {item!r}: expected NAME=VALUE, e.g. "
                                 "cleanup.policy=compact")
        configs[key.strip()] = value.strip()
    return configs
