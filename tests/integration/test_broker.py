"""The local broker edge: round trip, topic creation, pause/resume (stream/tools/broker.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

from models.contract.errors import BrokerUnavailableError
from stream.tools.broker import EmbeddedBroker, create_topics, wait_for_broker


def _consume_all(bootstrap: str, topic: str, expected: int) -> list[tuple[bytes, bytes]]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=5000)  # fmt: skip
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
        records = []
        for record in consumer:
            records.append((record.key, record.value))
            if len(records) >= expected:
                break
        return records
    finally:
        consumer.close()


def test_produce_consume_round_trip(broker, unique_name: Callable[[str], str]) -> None:
    topic = unique_name("roundtrip")
    create_topics(broker.bootstrap_servers, [topic], partitions=3)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers)
    sent = [(f"user-{i % 4}".encode(), f'{{"n": {i}}}'.encode()) for i in range(20)]
    for key, value in sent:
        producer.send(topic, key=key, value=value)
    producer.flush(timeout=10)
    producer.close()

    received = _consume_all(broker.bootstrap_servers, topic, expected=len(sent))

    assert sorted(received) == sorted(sent)


def test_create_topics_is_idempotent_and_sets_partitions(broker, unique_name) -> None:
    first, second = unique_name("a"), unique_name("b")

    created = create_topics(broker.bootstrap_servers, [first], partitions=4)
    again = create_topics(broker.bootstrap_servers, [first, second], partitions=2)

    assert created == [first]
    assert again == [second]
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    try:
        described = {
            t["name"]: len(t["partitions"]) for t in admin.describe_topics([first, second])
        }
    finally:
        admin.close()
    assert described == {first: 4, second: 2}


def test_create_topics_rejects_zero_partitions(broker, unique_name) -> None:
    with pytest.raises(ValueError, match="partitions"):
        create_topics(broker.bootstrap_servers, [unique_name("z")], partitions=0)


def test_unreachable_broker_is_a_clear_error() -> None:
    with pytest.raises(BrokerUnavailableError, match="cannot reach"):
        wait_for_broker("127.0.0.1:1", timeout_s=1.0)


def test_pause_keeps_data_and_resume_serves_again(broker, unique_name) -> None:
    if not isinstance(broker, EmbeddedBroker):
        pytest.skip("pause/resume needs the embedded broker, not PORTRAIT_TEST_BOOTSTRAP")
    topic = unique_name("paused")
    create_topics(broker.bootstrap_servers, [topic], partitions=1)

    broker.pause()
    try:
        with pytest.raises(BrokerUnavailableError):
            wait_for_broker(broker.bootstrap_servers, timeout_s=1.5)
    finally:
        broker.resume()

    wait_for_broker(broker.bootstrap_servers, timeout_s=10.0)
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    try:
        assert topic in admin.list_topics()
    finally:
        admin.close()
