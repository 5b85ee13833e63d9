"""Input from a transactional producer: the worker reads committed records only, counts each once,
and commits past the transaction markers (committed offset at the log end, lag 0).

kafka-python's transactional producer writes the input. Broker faults in the way
(ENVIRONMENT.md): the local broker hands the records of an *aborted* transaction to
``read_committed`` consumers (fault 6), so the aborted case is checked last and marked as an
expected failure when exactly that happens; open transactions and commit markers work.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from reliability_kit import (
    Trial,
    comment,
    committed_offsets,
    create_source_topics,
    latest_profiles,
    metric,
    read_topic,
    scrape,
    start_worker,
    wait_until,
    worker_settings,
)

from stream.partitioner import user_partition
from stream.settings import Settings

USER = "tx-user"


def _count(bootstrap: str, topic: str, at_least: int, settle_s: float = 6.0) -> int:
    """The user's latest ``comment_count`` once it reached ``at_least`` (plus ``settle_s``)."""

    def reached(records: list[Any]) -> bool:
        profile = latest_profiles(records).get(USER, {}).get("profile", {})
        return int(profile.get("comment_count", 0)) >= at_least

    updates = read_topic(bootstrap, topic, reached, 90, settle_s=settle_s)
    return int(latest_profiles(updates).get(USER, {}).get("profile", {}).get("comment_count", 0))


def _log_end(bootstrap: str, tp: TopicPartition) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        return int(consumer.end_offsets([tp])[tp])
    finally:
        consumer.close()


class _Transactions:
    """kafka-python's transactional producer writing comments of :data:`USER` to its partition."""

    def __init__(self, settings: Settings, transactional_id: str) -> None:
        self.topic = settings.topics.comments
        self.partition = user_partition(USER, settings.topics.partitions)
        self.producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers,
                                      transactional_id=transactional_id)  # fmt: skip
        self.producer.init_transactions()

    def transaction(self, first: int, n: int, *, commit: bool | None) -> None:
        """Comments ``first`` to ``first + n - 1`` in one transaction; ``None`` leaves it open."""
        self.producer.begin_transaction()
        for i in range(first, first + n):
            value = json.dumps(comment(i, USER, "great")).encode()
            self.producer.send(self.topic, key=USER.encode(), value=value,
                               partition=self.partition)  # fmt: skip
        self.producer.flush(timeout=10)
        if commit is True:
            self.producer.commit_transaction()
        elif commit is False:
            self.producer.abort_transaction()

    def close(self) -> None:
        self.producer.close()


def test_transactional_input_is_counted_once_and_committed_to_the_log_end(
    broker: Any, unique_name: Callable[[str], str], tmp_path: Path, tiny_model_dir: Path
) -> None:
    bootstrap = broker.bootstrap_servers
    settings = worker_settings(bootstrap, unique_name, tmp_path / "state", tiny_model_dir)
    create_source_topics(settings)
    updates_topic = settings.topics.profile_updates
    producer = _Transactions(settings, unique_name("tx"))
    topic, partition = producer.topic, producer.partition
    worker = start_worker(settings, tmp_path / "worker.log")
    try:
        for t in range(10):  # 10 committed transactions of 10 comments
            producer.transaction(10 * t, 10, commit=True)
        producer.transaction(100, 10, commit=None)  # open: its records must not be profiled yet
        assert _count(bootstrap, updates_topic, 100) == 100, worker.log_tail()

        producer.producer.commit_transaction()
        assert _count(bootstrap, updates_topic, 110) == 110, worker.log_tail()
        # the partition ends in a commit marker: the committed offset reaches the log end
        end = _log_end(bootstrap, TopicPartition(topic, partition))
        assert end == 110 + 11  # 110 records, 11 markers
        wait_until(lambda: committed_offsets(bootstrap, settings.app_id).get((topic, partition))
                   == end, 30, f"committed offset {end}", poll_s=0.5)  # fmt: skip
        wait_until(lambda: metric(scrape(settings.metrics_port), "portrait_consumer_lag_events",
                                  topic=topic) == 0, 30, "lag 0", poll_s=0.5)  # fmt: skip
    finally:
        producer.close()
        worker.stop()
    Trial("transactional-producer", {"transactions": 11, "records": 110,
                                     "result": "exact, committed to the log end, lag 0"}
          ).report()  # fmt: skip


def test_aborted_transaction_is_not_profiled(
    broker: Any, unique_name: Callable[[str], str], tmp_path: Path, tiny_model_dir: Path
) -> None:
    bootstrap = broker.bootstrap_servers
    settings = worker_settings(bootstrap, unique_name, tmp_path / "state", tiny_model_dir)
    create_source_topics(settings)
    producer = _Transactions(settings, unique_name("tx"))
    worker = start_worker(settings, tmp_path / "worker.log")
    try:
        producer.transaction(0, 10, commit=True)
        producer.transaction(10, 10, commit=False)  # aborted
        producer.transaction(20, 1, commit=True)  # a committed record after it
        counted = _count(bootstrap, settings.topics.profile_updates, 11)
    finally:
        producer.close()
        worker.stop()
    if counted == 21:
        pytest.xfail("the local broker hands aborted records to read_committed consumers "
                     "(ENVIRONMENT.md, broker fault 6)")  # fmt: skip
    assert counted == 11
