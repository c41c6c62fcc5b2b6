"""An application's consumer group as the offline tools see it (`reset`, `savepoint`): who is
in it now, and what it has committed. Each raises KafkaException; the caller says what it was
doing when the broker failed."""

from __future__ import annotations

from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, KafkaException
from confluent_kafka.admin import AdminClient


def group_members(admin: AdminClient, group: str, timeout: float = 15.0) -> list[Any]:
    """The group's members now (each with `member_id` and `host`)."""
    desc = admin.describe_consumer_groups([group], request_timeout=timeout)[group].result()
    return list(desc.members or [])


def members_now(admin: AdminClient, group: str) -> list[Any]:
    """The group's members; none when there is no such group (nothing runs)."""
    try:
        return group_members(admin, group)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.GROUP_ID_NOT_FOUND:
            raise
        return []


def describe_member(member: Any) -> str:
    """A member as error lines name it."""
    return f"member {member.member_id} (client {member.client_id} on {member.host.lstrip('/')})"


def committed_offsets(admin: AdminClient, group: str, timeout: float = 15.0
                      ) -> dict[tuple[str, int], int]:
    """The group's committed offsets by (topic, partition)."""
    req = ConsumerGroupTopicPartitions(group)
    result = admin.list_consumer_group_offsets([req], request_timeout=timeout)[group].result()
    return {(tp.topic, tp.partition): tp.offset for tp in result.topic_partitions or []
            if tp.offset >= 0 and tp.error is None}
