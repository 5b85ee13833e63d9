"""Privacy: pseudonymised user ids, and erasure requests (``portrait forget``).

Pseudonymisation (off by default): with ``PORTRAIT_PSEUDONYMISATION__SECRET`` set, the worker
replaces every user id by ``HMAC-SHA256(secret, user_id)`` as 64 lowercase hex characters (HMAC:
RFC 2104; SHA-256: FIPS 180-4) right after decoding an event, so the profile table, its changelog,
``profile-updates.v1`` and the log lines only ever hold the pseudonym. Without the secret a
pseudonym cannot be linked back to a user id by guessing ids (unlike a plain hash). The source
topics and the dead-letter topic (original bytes) still hold the raw ids.

Erasure: :func:`request_erasure` writes an :class:`~stream.events.ErasureRequest` keyed by the user
id to ``erasure.v1``, which is co-partitioned with the source topics. First it waits until the
worker's consumer group has committed every event already in the user's partition of both source
topics, so the erasure removes all the events sent before it; the worker then deletes the profile
(a changelog tombstone) and writes a tombstone on ``profile-updates.v1``, and the user's later
events start a new profile.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from models.contract.errors import BrokerUnavailableError, PortraitError
from stream.events import ErasureRequest
from stream.kafka_admin import create_topics, kafka_client_config
from stream.partitioner import user_partition
from stream.publish import make_producer
from stream.settings import PseudonymisationSettings, Settings

__all__ = [
    "ErasureReceipt",
    "ErasureTimeoutError",
    "Pseudonymiser",
    "request_erasure",
    "user_partition",
]

_POLL_S = 0.5
_TAIL_POLLS = 5


class Pseudonymiser:
    """``user_id -> HMAC-SHA256(secret, user_id)`` hex digest, or the identity without a secret.

    Args:
        settings: The pseudonymisation settings (``secret`` None = off).

    Example:
        >>> from pydantic import SecretStr
        >>> pseudonym = Pseudonymiser(PseudonymisationSettings(secret=SecretStr("k" * 16)))
        >>> len(pseudonym("ana"))
        64
    """

    def __init__(self, settings: PseudonymisationSettings) -> None:
        secret = settings.secret
        self._key = None if secret is None else secret.get_secret_value().encode("utf-8")

    @property
    def enabled(self) -> bool:
        """Whether user ids are replaced."""
        return self._key is not None

    def __call__(self, user_id: str) -> str:
        """The id to store and emit for ``user_id`` (UTF-8 encoded before hashing)."""
        if self._key is None:
            return user_id
        return hmac.new(self._key, user_id.encode("utf-8"), hashlib.sha256).hexdigest()

    def __repr__(self) -> str:
        return f"Pseudonymiser(enabled={self.enabled})"  # never the key


class ErasureTimeoutError(PortraitError):
    """The worker had not caught up with the user's events in time; nothing was written.

    Start the worker (or wait for it to catch up) and run ``portrait forget`` again, or pass
    ``--wait-s 0`` to write the request at once (events still unprocessed would then be profiled
    after the erasure, as a new profile).

    Attributes:
        behind: ``"topic:partition" -> events not yet committed by the worker``.
    """

    def __init__(self, message: str, *, behind: dict[str, int]) -> None:
        super().__init__(message)
        self.behind = behind


@dataclass(frozen=True)
class ErasureReceipt:
    """Where an erasure request was written.

    Attributes:
        request_id: The request's id.
        topic: The erasure topic.
        partition: Its partition (the user's partition in every co-partitioned topic).
        offset: Its offset.
        waited_s: Seconds spent waiting for the worker to catch up first.
    """

    request_id: str
    topic: str
    partition: int
    offset: int
    waited_s: float


def _behind(settings: Settings, admin: Any, ends: dict[Any, int]) -> dict[str, int]:
    """Events per source partition that the worker's group has not committed yet."""
    group = settings.app_id
    committed = admin.list_group_offsets({group: list(ends)}).get(group, {})
    behind = {}
    for tp, end in ends.items():
        meta = committed.get(tp)
        done = meta.offset if meta is not None and meta.offset >= 0 else 0
        if done < end:
            behind[f"{tp.topic}:{tp.partition}"] = end - done
    return behind


def _end_offsets(consumer: Any, tps: list[Any]) -> dict[Any, int]:
    """The offset after the last record of each partition.

    ``end_offsets`` alone can be short: the local Tansu broker answers ListOffsets(latest) with
    the last *batch's* base offset + 1 (docs/reliability.md), so the records after the reported
    end are read and counted too (on Apache Kafka that read comes back empty). At most
    :data:`_TAIL_POLLS` polls, so records still being produced cannot keep it reading.
    """
    ends = dict(consumer.end_offsets(tps))
    consumer.assign(tps)
    for tp in tps:
        consumer.seek(tp, ends[tp])
    for _ in range(_TAIL_POLLS):
        batches = consumer.poll(timeout_ms=300)
        if not batches:
            break
        for tp, records in batches.items():
            ends[tp] = max(ends[tp], records[-1].offset + 1)
    return ends


def _wait_for_worker(settings: Settings, partition: int, wait_s: float,
                     sleep: Callable[[float], None]) -> None:  # fmt: skip
    """Block until the group committed the end offsets (read now) of the user's partitions of
    the source topics and of their repartition topics (events re-routed to the user's partition)."""
    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    config = kafka_client_config(settings.kafka)
    try:
        consumer = KafkaConsumer(**config, group_id=None, enable_auto_commit=False)
        admin = KafkaAdminClient(**config)
    except KafkaError as exc:
        raise BrokerUnavailableError(f"cannot reach the Kafka broker: {exc}") from exc
    try:
        topics = [settings.topics.comments, settings.topics.behavior]
        topics += [name for name in settings.repartition_topics().values()
                   if consumer.partitions_for_topic(name)]  # fmt: skip
        tps = [TopicPartition(t, partition) for t in topics]
        ends = _end_offsets(consumer, tps)
        deadline = time.monotonic() + wait_s
        while behind := _behind(settings, admin, ends):
            if time.monotonic() >= deadline:
                raise ErasureTimeoutError(
                    f"the worker (consumer group {settings.app_id!r}) has not processed "
                    f"{sum(behind.values())} earlier events of this user's partition {behind} "
                    f"within {wait_s:g} s; nothing was written. Start the worker or wait, then "
                    "run again (or use --wait-s 0 to write the request at once)",
                    behind=behind,
                )
            sleep(_POLL_S)
    except KafkaError as exc:
        raise BrokerUnavailableError(f"reading the worker's progress failed: {exc}") from exc
    finally:
        consumer.close()
        admin.close()


def request_erasure(
    settings: Settings,
    user_id: str,
    *,
    wait_s: float = 60.0,
    producer: Any = None,
    sleep: Callable[[float], None] = time.sleep,
) -> ErasureReceipt:
    """Write an erasure request for ``user_id``, after the worker has caught up with the user.

    Args:
        settings: Broker, topics and the worker's ``app_id`` (its consumer group).
        user_id: The raw user id, as in the source events (the worker pseudonymises it).
        wait_s: Seconds to wait for the worker's group to commit every event already in the user's
            partition of the source topics; 0 = write at once.
        producer: A kafka-python producer; ``None`` = a new one
            (:func:`stream.publish.make_producer`), closed at the end.
        sleep: Sleeps between polls of the group's offsets (injected in tests).

    Returns:
        Where the request was written.

    Raises:
        ValueError: ``user_id`` is empty or longer than 128 characters.
        ErasureTimeoutError: The worker had not caught up within ``wait_s`` (nothing written).
        BrokerUnavailableError: No broker is configured, it cannot be reached, or it did not
            accept the request.
    """
    from kafka.errors import KafkaError

    if not settings.kafka.bootstrap_list:
        raise BrokerUnavailableError("no Kafka broker configured: set "
                                     "PORTRAIT_KAFKA__BOOTSTRAP_SERVERS=host:port")  # fmt: skip
    request = ErasureRequest(request_id=uuid.uuid4().hex, user_id=user_id,
                             requested_at=datetime.now(UTC))  # fmt: skip
    started = time.monotonic()
    if wait_s > 0:
        partition = user_partition(user_id, settings.topics.partitions)
        _wait_for_worker(settings, partition, wait_s, sleep)
    topics, config = settings.topics, kafka_client_config(settings.kafka)
    create_topics(config.pop("bootstrap_servers"), [topics.erasure], topics.partitions,
                  topics.replication_factor, **config)  # fmt: skip
    own = producer is None
    producer = make_producer(settings) if own else producer
    try:
        meta = producer.send(settings.topics.erasure, key=user_id.encode("utf-8"),
                             value=request.to_json_bytes()).get(timeout=30)  # fmt: skip
    except KafkaError as exc:
        raise BrokerUnavailableError(f"the erasure request was not written: {exc}") from exc
    finally:
        if own:
            producer.close()
    return ErasureReceipt(request.request_id, meta.topic, meta.partition, meta.offset,
                          time.monotonic() - started)  # fmt: skip
