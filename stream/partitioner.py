"""Which partition a user's records go to: Kafka's default partitioner, as producers compute it."""

from __future__ import annotations

from kafka.partitioner.default import murmur2

__all__ = ["user_partition"]


def user_partition(user_id: str, partitions: int) -> int:
    """The partition of a record keyed by ``user_id`` under Kafka's default partitioner.

    murmur2 of the UTF-8 key, as the Java client, kafka-python and aiokafka compute it.

    Args:
        user_id: The raw user id (the record key).
        partitions: Partitions of the topic, >= 1.
    """
    return int((murmur2(user_id.encode("utf-8")) & 0x7FFFFFFF) % partitions)
