"""One user on two partitions (two producers with different partitioners): the worker keeps one
profile. Under ``PORTRAIT_TOPICS__WRONG_PARTITION=reroute`` (the default) the records off the
key's partition go through the repartition topic to it and are profiled; under ``dead_letter``
they are dead-lettered as ``wrong_partition``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer
from reliability_kit import (
    Trial,
    comment,
    create_source_topics,
    latest_profiles,
    metric,
    read_topic,
    scrape,
    start_worker,
    worker_settings,
)

from stream.partitioner import user_partition


@pytest.mark.parametrize("policy", ["reroute", "dead_letter"])
def test_one_user_written_to_two_partitions_keeps_one_profile(
    policy: str, broker: Any, unique_name: Callable[[str], str], tmp_path: Path,
    tiny_model_dir: Path,
) -> None:  # fmt: skip
    bootstrap = broker.bootstrap_servers
    settings = worker_settings(bootstrap, unique_name, tmp_path / "state", tiny_model_dir,
                               topics={"wrong_partition": policy})  # fmt: skip
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
    expected = 10 if policy == "reroute" else 5
    try:
        if policy == "dead_letter":
            dead = read_topic(bootstrap, settings.topics.dead_letter, lambda r: len(r) >= 5, 90)

        def counted(records: list[Any]) -> bool:
            profile = latest_profiles(records).get("ana", {}).get("profile", {})
            return bool(profile.get("comment_count") == expected)

        updates = read_topic(bootstrap, settings.topics.profile_updates, counted, 90, settle_s=2.0)
        rerouted = metric(scrape(settings.metrics_port), "portrait_events_rerouted_total")
    finally:
        worker.stop()
    assert {r.partition for r in updates if r.key == b"ana"} == {home}  # one profile's updates
    assert latest_profiles(updates)["ana"]["profile"]["comment_count"] == expected
    if policy == "reroute":
        assert rerouted == 5
        assert read_topic(bootstrap, settings.topics.dead_letter, lambda r: False, 3) == []
    else:
        assert rerouted == 0 and len(dead) == 5, worker.log_tail()
        assert {dict(r.headers)["portrait.error.reason"] for r in dead} == {b"wrong_partition"}
    Trial(
        f"one-user-two-partitions-{policy}",
        {"records": 10, "off_partition": 5, "result": f"one profile of {expected}"},
    ).report()
