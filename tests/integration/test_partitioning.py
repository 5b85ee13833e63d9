"""One user on two partitions: the records off the key's partition are dead-lettered as
wrong_partition, so the user keeps one profile (the producer's partitioner must be murmur2)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kafka import KafkaProducer
from reliability_kit import (
    comment,
    create_source_topics,
    latest_profiles,
    read_topic,
    start_worker,
    worker_settings,
)

from stream.partitioner import user_partition


def test_one_user_written_to_two_partitions_keeps_one_profile(
    broker: Any, unique_name: Callable[[str], str], tmp_path: Path, tiny_model_dir: Path
) -> None:
    bootstrap = broker.bootstrap_servers
    settings = worker_settings(bootstrap, unique_name, tmp_path / "state", tiny_model_dir)
    create_source_topics(settings)
    partitions = settings.topics.partitions
    home = user_partition("ana", partitions)
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for i in range(10):  # five on the key's partition, five on the next one (another partitioner)
        value = json.dumps(comment(i, "ana", "great")).encode()
        partition = home if i % 2 == 0 else (home + 1) % partitions
        producer.send(settings.topics.comments, key=b"ana", value=value, partition=partition)
    producer.flush(timeout=10)
    producer.close()
    worker = start_worker(settings, tmp_path / "worker.log")
    try:
        dead = read_topic(bootstrap, settings.topics.dead_letter, lambda r: len(r) >= 5, 90)

        def counted(records: list[Any]) -> bool:
            profile = latest_profiles(records).get("ana", {}).get("profile", {})
            return bool(profile.get("comment_count") == 5)

        updates = read_topic(bootstrap, settings.topics.profile_updates, counted, 90, settle_s=2.0)
    finally:
        worker.stop()
    assert len(dead) == 5, worker.log_tail()
    assert {dict(r.headers)["portrait.error.reason"] for r in dead} == {b"wrong_partition"}
    assert {r.partition for r in updates if r.key == b"ana"} == {home}  # one profile's updates
    assert latest_profiles(updates)["ana"]["profile"]["comment_count"] == 5
