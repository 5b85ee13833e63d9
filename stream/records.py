"""Source records in: decode and check one, or say how it goes to the dead-letter topic.

Plain Python, no faust or Kafka import. The faust agents wrap each Kafka record in a
:class:`SourceRecord`; :func:`decode_record` turns it into an event (or raises
:class:`~models.contract.errors.EventError`), and :func:`dead_letter_record_headers` gives the
headers of its
dead-letter record when it cannot be used. :mod:`stream.processing` runs these for every micro-batch
and re-exports them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from models.contract.errors import EventError, InferenceError
from stream.event_time import EVENT_TIME_OUT_OF_RANGE
from stream.events import (
    HEADER_ERROR_DETAIL,
    HEADER_ERROR_REASON,
    BehaviorEvent,
    CommentEvent,
    ErasureRequest,
    dead_letter_headers,
)
from stream.partitioner import user_partition

__all__ = [
    "EVENT_TIME_OUT_OF_RANGE",
    "HEADER_REROUTED_FROM",
    "INFERENCE_FAILED",
    "KEY_MISMATCH",
    "MAX_AGE",
    "MAX_FUTURE",
    "WRONG_PARTITION",
    "SourceRecord",
    "check_event_time",
    "check_partition",
    "check_key",
    "dead_letter_record_headers",
    "decode_record",
]

KEY_MISMATCH = "key_mismatch"
"""Dead-letter reason: the record key is not the event's ``user_id`` (so not its partition)."""

INFERENCE_FAILED = "inference_failed"
"""Dead-letter reason: the classifier failed on the event after all retries."""

WRONG_PARTITION = "wrong_partition"
"""Dead-letter reason: the record is not on its key's partition (see :func:`check_partition`)."""

HEADER_REROUTED_FROM = "portrait.rerouted.from"
"""Header of a re-routed record on a repartition topic: ``topic:partition:offset`` it came from."""

MAX_FUTURE = timedelta(days=1)
"""An event may be dated at most this far after the worker's clock (producer clock skew)."""

MAX_AGE = timedelta(days=3650)
"""An event may be dated at most this long (10 years) before the worker's clock."""

_PORTRAIT_HEADER_PREFIX = "portrait."
E = TypeVar("E", CommentEvent, BehaviorEvent, ErasureRequest)


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One Kafka record as the worker received it.

    Attributes:
        topic: Source topic.
        partition: Source partition.
        offset: Offset within the partition.
        key: Record key bytes (``None`` if the producer set none).
        value: Record value bytes (``None`` for a tombstone).
        headers: Record headers as ``(name, value)`` pairs, in record order.
        timestamp_s: Record timestamp, epoch seconds, if the broker gave one.
        handle: The transport's own event object (a faust ``Event``); opaque here.
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp_s: float | None = None
    handle: object = None


def check_key(record: SourceRecord, user_id: str) -> None:
    """Check that the record key is the event's user id.

    The profile table is co-partitioned with the source topics by key: an event keyed otherwise
    sits in another user's partition and would split that user's profile across partitions.

    Args:
        record: The source record.
        user_id: The decoded event's ``user_id``.

    Raises:
        EventError: Reason :data:`KEY_MISMATCH` when the key is missing or differs.
    """
    if record.key != user_id.encode("utf-8"):
        what = "missing" if record.key is None else "not the event's user_id"
        raise EventError(
            KEY_MISMATCH, f"record key is {what}; key {record.topic} records by user_id (UTF-8)"
        )


def check_partition(record: SourceRecord, user_id: str, partitions: int) -> None:
    """Check that the record sits on its key's partition under Kafka's default partitioner.

    The profile table is co-partitioned with the source topics: a user's events must all land on
    the partition murmur2 of the UTF-8 user id picks (the Java client's, kafka-python's and
    aiokafka's default; confluent-kafka needs ``partitioner=murmur2_random``). A record elsewhere
    (another partitioner, or an explicit partition) would start a second profile for the user.

    Args:
        record: The source record.
        user_id: The decoded event's raw ``user_id`` (the record key).
        partitions: Partitions of the source topics (``PORTRAIT_TOPICS__PARTITIONS``).

    Raises:
        EventError: Reason :data:`WRONG_PARTITION`.
    """
    expected = user_partition(user_id, partitions)
    if record.partition != expected:
        raise EventError(
            WRONG_PARTITION,
            f"record is on partition {record.partition} of {record.topic}, its key's partition "
            f"is {expected} (murmur2 of the key, Kafka's default partitioner; confluent-kafka: "
            "partitioner=murmur2_random)",
        )


def check_event_time(event_time: datetime, now: datetime) -> None:
    """Refuse an event time outside ``[now - MAX_AGE, now + MAX_FUTURE]``.

    One event dated 9999-12-31 would otherwise become the profile's reference time and freeze
    its decayed scores (forward decay weighs every later, real event by ``2**(-9999 years /
    half-life)``); one dated 0001-01-01 is no better.

    Raises:
        EventError: reason ``event_time_out_of_range``.
    """
    if event_time > now + MAX_FUTURE:
        hours = MAX_FUTURE // timedelta(hours=1)
        detail = f"event_time is more than {hours} hours after the worker's clock"
        raise EventError(EVENT_TIME_OUT_OF_RANGE, detail)
    if event_time < now - MAX_AGE:
        detail = f"event_time is more than {MAX_AGE.days} days before the worker's clock"
        raise EventError(EVENT_TIME_OUT_OF_RANGE, detail)


def decode_record(
    record: SourceRecord,
    decode: Callable[[bytes | None], E],
    pseudonymise: Callable[[str], str] | None = None,
    partitions: int | None = None,
) -> E:
    """Decode a record's value, check its key, then pseudonymise its ``user_id``.

    Args:
        record: The source record.
        decode: ``events.decode_comment``, ``decode_behavior`` or ``decode_erasure``.
        pseudonymise: Maps the (raw, key-checked) user id to the id used from here on; ``None``
            keeps it.
        partitions: Partitions of the source topics: the record must sit on its key's
            partition (:func:`check_partition`); ``None`` skips that check.

    Returns:
        The event.

    Raises:
        EventError: The value is undecodable or invalid, or the key check failed.
    """
    event = decode(record.value)
    check_key(record, event.user_id)
    if partitions is not None:
        check_partition(record, event.user_id, partitions)
    if pseudonymise is not None:
        event = event.model_copy(update={"user_id": pseudonymise(event.user_id)})
    return event


def dead_letter_record_headers(
    record: SourceRecord, error: EventError | InferenceError
) -> list[tuple[str, bytes]]:
    """Headers of the dead-letter record for ``record``.

    The ``portrait.*`` headers (source topic, partition, offset, error class, reason, detail)
    come first, then the original record's headers except any named ``portrait.*``.

    Args:
        record: The failed source record.
        error: Why it failed; an :class:`InferenceError` gets reason :data:`INFERENCE_FAILED` and
            its message (which never quotes the text) as detail.

    Returns:
        ``(name, value)`` pairs, values UTF-8 bytes.
    """
    headers = dead_letter_headers(record.topic, record.partition, record.offset, error)
    if isinstance(error, InferenceError):
        override = {HEADER_ERROR_REASON: INFERENCE_FAILED, HEADER_ERROR_DETAIL: str(error)[:1000]}
        headers = [(k, override[k].encode("utf-8") if k in override else v) for k, v in headers]
    original = [(k, v) for k, v in record.headers if not k.startswith(_PORTRAIT_HEADER_PREFIX)]
    return headers + original
