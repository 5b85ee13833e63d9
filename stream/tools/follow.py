"""Reading Portrait's output topics: profile updates and the dead-letter topic.

:func:`read_profiles` backs ``portrait profiles`` (print updates, or one user's latest profile).
:class:`OutputFollower` backs ``portrait demo``: a background thread that keeps the latest profile
per user (highest ``version``), the receipt time of every update, and counts dead-lettered events.

Consumers here are group-less (partitions assigned directly, nothing committed), so reading never
disturbs a consumer group. "Caught up" means every partition's position reached the end offset
seen at the start and one more poll came back empty (the local Tansu broker reports end offsets
one batch short; the extra poll picks up the rest of that batch).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from models.contract.errors import BrokerUnavailableError
from stream.privacy import user_partition

__all__ = [
    "OutputFollower",
    "ProfileReceipt",
    "assign_all",
    "group_less_consumer",
    "read_segment_events",
    "iter_records",
    "read_profiles",
]

logger = logging.getLogger(__name__)

_POLL_MS = 200
_REASON_HEADER = "portrait.error.reason"
_SOURCE_TOPIC_HEADER = "portrait.source.topic"


def group_less_consumer(client_config: dict[str, Any]) -> Any:
    """A kafka-python consumer without a group (assign partitions to it), from the earliest offset.

    Raises:
        BrokerUnavailableError: The broker cannot be reached.
    """
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    try:
        return KafkaConsumer(**client_config, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest", bootstrap_timeout_ms=10_000)  # fmt: skip
    except KafkaError as exc:
        servers = client_config.get("bootstrap_servers")
        where = ",".join(servers) if isinstance(servers, list) else servers
        raise BrokerUnavailableError(f"cannot reach the Kafka broker at {where}: {exc}") from exc


def assign_all(
    consumer: Any,
    topics: Iterable[str],
    *,
    from_beginning: bool = True,
    key: str | None = None,
) -> list[Any]:
    """Assign every partition of ``topics`` to a group-less consumer, or only the key's.

    Args:
        consumer: a kafka-python ``KafkaConsumer`` without a group.
        topics: topic names; each must exist.
        from_beginning: seek to the beginning (True) or to the end (False).
        key: only the partition a record with this key goes to under Kafka's default
            partitioner (:func:`stream.privacy.user_partition`), per topic.

    Returns:
        The assigned ``TopicPartition`` list.

    Raises:
        BrokerUnavailableError: a topic does not exist (or has no partitions).
    """
    from kafka import TopicPartition

    assigned = []
    for topic in topics:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise BrokerUnavailableError(f"topic {topic!r} does not exist on the broker")
        if key is not None:
            partitions = {user_partition(key, len(partitions))}
        assigned += [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(assigned)
    (consumer.seek_to_beginning if from_beginning else consumer.seek_to_end)(*assigned)
    return assigned


def iter_records(
    consumer: Any, *, follow: bool, stop: Callable[[], bool] = lambda: False
) -> Iterator[Any]:
    """Records from an assigned consumer until caught up (or forever with ``follow``).

    Args:
        consumer: an assigned kafka-python consumer.
        follow: keep reading after catching up, until ``stop()`` is true.
        stop: polled between fetches; True ends the iteration.

    Yields:
        kafka-python ``ConsumerRecord`` objects, in order within each partition.
    """
    assigned = list(consumer.assignment())
    end = consumer.end_offsets(assigned)
    while not stop():
        batches = consumer.poll(timeout_ms=_POLL_MS)
        for records in batches.values():
            yield from records
        if follow or batches:
            continue
        if all(consumer.position(tp) >= end[tp] for tp in assigned):
            return


def _decode(value: bytes | None) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        loaded = json.loads(value)
    except ValueError:
        logger.warning("profile update is not JSON, skipped bytes=%s", len(value))
        return None
    return loaded if isinstance(loaded, dict) else None


def read_profiles(
    client_config: dict[str, Any],
    topic: str,
    *,
    user_id: str | None = None,
    follow: bool = False,
    emit: Callable[[str], None] = print,
    stop: Callable[[], bool] = lambda: False,
) -> int:
    """Print profile updates as JSON lines, or one user's latest profile.

    Without ``user_id`` every update is printed as it is read (a tombstone as
    ``{"user_id": ..., "profile": null}``). With ``user_id`` the topic is read from the beginning
    until caught up and that user's latest update is printed (the last one read, ignoring a stale
    lower version; then, with ``follow``, each later one as it comes).

    Args:
        client_config: kafka-python connection options (see
        ``stream.tools.broker.kafka_client_config``).
        topic: the profile-updates topic.
        user_id: print only this user's latest profile.
        follow: keep following after catching up (until ``stop()`` is true, or Ctrl-C).
        emit: where each JSON line goes.
        stop: polled between fetches; True ends reading.

    Returns:
        Number of lines emitted (0 with ``user_id`` means the user has no profile).

    Raises:
        BrokerUnavailableError: the broker cannot be reached or the topic does not exist.
    """
    consumer = group_less_consumer(client_config)
    emitted = 0
    try:
        assign_all(consumer, [topic], key=user_id)
        if user_id is not None:
            latest: tuple[int | None, str] | None = None  # only the key's partition is read
            for record in iter_records(consumer, follow=False, stop=stop):
                line = _line_of(record, user_id)
                if line is not None and _newer(line, latest):
                    latest = line
            if latest is not None:
                emit(latest[1])
                emitted += 1
            if not follow:
                return emitted
        for record in iter_records(consumer, follow=follow, stop=stop):
            line = _line_of(record, user_id)
            if line is not None:
                emit(line[1])
                emitted += 1
        return emitted
    finally:
        consumer.close()


def _newer(line: tuple[int | None, str], latest: tuple[int | None, str] | None) -> bool:
    """Whether ``line`` replaces ``latest``: a later record wins unless it has a lower version
    than a live profile (a stale redelivery); a tombstone (version None) always wins, and so does
    any update after one (a new profile after erasure)."""
    if latest is None or latest[0] is None or line[0] is None:
        return True
    return line[0] >= latest[0]


def _line_of(record: Any, user_id: str | None) -> tuple[int | None, str] | None:
    """(version, JSON line) of a profile-update record (version None for a tombstone), or None
    when it is for another user."""
    key = record.key.decode("utf-8", "replace") if record.key is not None else None
    if record.value is None:  # a tombstone: the user's profile was erased
        if user_id is not None and key != user_id:
            return None
        return (None, json.dumps({"user_id": key, "profile": None}))
    update = _decode(record.value)
    if update is None or (user_id is not None and update.get("user_id", key) != user_id):
        return None
    return (int(update.get("version", 0)), json.dumps(update, ensure_ascii=False))


@dataclass(frozen=True, slots=True)
class ProfileReceipt:
    """When a profile update arrived and which source offsets it covers.

    Attributes:
        received_s: wall-clock receipt time, epoch seconds.
        applied_offsets: the profile's ``"topic:partition"`` -> last applied offset.
    """

    received_s: float
    applied_offsets: dict[str, int]


@dataclass
class _State:
    latest: dict[str, dict[str, Any]] = field(default_factory=dict)
    receipts: list[ProfileReceipt] = field(default_factory=list)
    dead_by_reason: Counter[str] = field(default_factory=Counter)
    profiled_by_user: dict[str, int] = field(default_factory=dict)


class OutputFollower(threading.Thread):
    """Follows the profile-updates and dead-letter topics in a background thread.

    Args:
        client_config: kafka-python connection options.
        profile_topic: the profile-updates topic.
        dead_letter_topic: the dead-letter topic.
        source_topics: count only dead-lettered events from these source topics.
        from_beginning: read both topics from the beginning (True) or only new records.
    """

    def __init__(self, client_config: dict[str, Any], profile_topic: str, dead_letter_topic: str,
                 source_topics: Iterable[str], *, from_beginning: bool = True) -> None:  # fmt: skip
        super().__init__(name="portrait-output-follower", daemon=True)
        self._consumer = group_less_consumer(client_config)
        assign_all(
            self._consumer, [profile_topic, dead_letter_topic], from_beginning=from_beginning
        )
        self._profile_topic = profile_topic
        self._sources = set(source_topics)
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._state = _State()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for record in iter_records(self._consumer, follow=True, stop=self._stop_event.is_set):
                self._handle(record, time.time())
        except Exception as exc:  # reported to the caller through .error, never swallowed
            logger.exception("output follower failed")
            self.error = exc
        finally:
            self._consumer.close()

    def _handle(self, record: Any, received_s: float) -> None:
        if record.topic != self._profile_topic:
            headers = {k: v.decode("utf-8", "replace") for k, v in (record.headers or [])}
            if headers.get(_SOURCE_TOPIC_HEADER) in self._sources:
                with self._lock:
                    self._state.dead_by_reason[headers.get(_REASON_HEADER, "unknown")] += 1
            return
        update = _decode(record.value)
        if update is None or "user_id" not in update:
            return
        profile = update.get("profile") or {}
        with self._lock:
            user = str(update["user_id"])
            self._state.receipts.append(
                ProfileReceipt(received_s, dict(profile.get("applied_offsets", {})))
            )
            current = self._state.latest.get(user)
            if current is None or int(update.get("version", 0)) >= int(current.get("version", 0)):
                self._state.latest[user] = update
                self._state.profiled_by_user[user] = _events_in(profile)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop following and wait for the thread to end."""
        self._stop_event.set()
        self.join(timeout=timeout_s)

    @property
    def profiled(self) -> int:
        """Events reflected in the latest profiles: comments plus behaviour events, all users."""
        with self._lock:
            return sum(self._state.profiled_by_user.values())

    def events_of(self, user_id: str) -> int:
        """Events reflected in one user's latest profile (0 when there is none yet)."""
        with self._lock:
            return self._state.profiled_by_user.get(user_id, 0)

    @property
    def dead_lettered(self) -> int:
        """Dead-lettered events from the source topics seen so far."""
        with self._lock:
            return sum(self._state.dead_by_reason.values())

    def snapshot(self) -> tuple[dict[str, dict[str, Any]], list[ProfileReceipt], Counter[str]]:
        """Copies of (latest update per user, receipts, dead-lettered counts by reason)."""
        with self._lock:
            return (dict(self._state.latest), list(self._state.receipts),
                    Counter(self._state.dead_by_reason))  # fmt: skip


def _events_in(profile: dict[str, Any]) -> int:
    """Comments plus behaviour events applied to a profile dict."""
    comments = int(profile.get("comment_count", 0))
    return comments + sum(int(n) for n in (profile.get("behavior_counts") or {}).values())


def read_segment_events(
    client_config: dict[str, Any],
    topic: str,
    *,
    user_id: str | None = None,
    follow: bool = False,
    emit: Callable[[str], None] = print,
    stop: Callable[[], bool] = lambda: False,
) -> int:
    """Print segment transitions (``segment-events.v1`` values) as JSON lines, once each.

    The topic is at least once: a transition emitted again after a crash carries the same
    ``version``; only the first of each (user, segment, version) is printed.

    The arguments are those of :func:`read_profiles`, with ``topic`` the segment-events topic
    and ``user_id`` selecting that user's transitions; returns the number of lines emitted.

    Raises:
        BrokerUnavailableError: the broker cannot be reached or the topic does not exist.
    """
    consumer = group_less_consumer(client_config)
    seen: set[tuple[str, str, int]] = set()
    try:
        assign_all(consumer, [topic], key=user_id)
        for record in iter_records(consumer, follow=follow, stop=stop):
            if record.value is None or (user_id is not None and record.key != user_id.encode()):
                continue
            event = json.loads(record.value)
            seen_key = (event["user_id"], event["segment"], event["version"])
            if seen_key not in seen:
                seen.add(seen_key)
                emit(json.dumps(event, ensure_ascii=False))
    finally:
        consumer.close()
    return len(seen)
