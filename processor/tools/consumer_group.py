"""An application's consumer group as the offline tools see it (`reset`, `savepoint`): who is
in it now, and what it has committed. Each raises KafkaException; the caller says what it was
doing when the broker failed."""

from __future__ import annotations

from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions
from confluent_kafka.admin import AdminClient


def group_members(admin: AdminClient, group: str, timeout: float = 15.0) -> list[Any]:
    """The group's members now (each with `member_id` and `host`)."""
    desc = admin.describe_consumer_groups([group], request_timeout=timeout)[group].result()
    return list(desc.members or [])


def committed_offsets(admin: AdminClient, group: str, timeout: float = 15.0
                      ) -> dict[tuple[str, int], int]:
    """The group's committed offsets by (topic, partition)."""
    req = ConsumerGroupTopicPartitions(group)
    result = admin.list_consumer_group_offsets([req], request_timeout=timeout)[group].result()
    return {(tp.topic, tp.partition): tp.offset for tp in result.topic_partitions or []
            if tp.offset >= 0 and tp.error is None}
