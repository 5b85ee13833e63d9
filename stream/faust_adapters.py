"""The worker's faust adapters: the profile table, the erasure ledger and the output topics
behind the protocols of :mod:`stream.processing`, a faust event as a :class:`SourceRecord`, and
the agents' micro-batching loop.

The table adapters bind each read and write to its event (:func:`_bound_to`), through
faust-streaming's private ``faust.streams._current_event`` (pinned to faust-streaming 0.15.x; the
consumer's private hooks are in :mod:`stream.rebalance` and :mod:`stream.committed_reads`).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import aclosing, contextmanager
from typing import Any

from faust.streams import _current_event  # see _bound_to()

from stream.batching import MicroBatch, micro_batches
from stream.processing import BatchResult, SourceRecord
from stream.settings import BatchSettings

__all__ = [
    "TableErasureLedger",
    "TableProfileStore",
    "TopicSink",
    "consume_in_batches",
    "record_from_event",
]


@contextmanager
def _bound_to(event: Any) -> Iterator[None]:
    """Make ``event`` faust's current event while reading or writing the table.

    faust picks a table key's partition (its RocksDB file and changelog partition) from the
    current-event context variable, which it sets only while a stream is being iterated. Batches
    are processed after the iteration, so each read and write binds the event it belongs to; the
    table is co-partitioned with the source topics, so that is the user's partition. This uses
    faust-streaming's private ``faust.streams._current_event`` (pinned to 0.15.x).
    """
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


class TableProfileStore:
    """:class:`stream.processing.ProfileStore` on a faust table keyed by UTF-8 user id bytes.

    Args:
        table: The faust table (values are ``Profile.to_dict()`` JSON dicts).
    """

    def __init__(self, table: Any) -> None:
        self._table = table

    def load(self, user_id: str, record: SourceRecord) -> dict[str, Any] | None:
        """The stored profile state of ``user_id`` in ``record``'s partition, or ``None``."""
        with _bound_to(record.handle):
            state = self._table.get(user_id.encode("utf-8"))
        return dict(state) if state is not None else None

    def save(self, user_id: str, state: dict[str, Any], record: SourceRecord) -> None:
        """Write ``state`` (RocksDB now, changelog record enqueued on the producer)."""
        with _bound_to(record.handle):
            self._table[user_id.encode("utf-8")] = state

    def delete(self, user_id: str, record: SourceRecord) -> None:
        """Delete ``user_id`` (RocksDB now, changelog tombstone enqueued), present or not."""
        with _bound_to(record.handle):
            del self._table[user_id.encode("utf-8")]

    def user_ids(self, record: SourceRecord) -> list[str]:
        """Every user id stored in ``record``'s partition (faust's private per-partition
        RocksDB handle ``data._db_for_partition``; faust's own ``__faust...`` keys left out)."""
        db = self._table.data._db_for_partition(record.partition)
        return [key.decode("utf-8") for key in db.keys() if not key.startswith(b"__faust")]


class TableErasureLedger:
    """:class:`stream.processing.ErasureLedger` on a faust table keyed by request id bytes.

    Co-partitioned like the profile table (the request's partition is the user's), so a request
    is checked and recorded in the partition whose worker carries it out. Values hold the
    request's source offset only, no user id; one entry per erasure ever requested.

    Args:
        table: The faust table.
    """

    def __init__(self, table: Any) -> None:
        self._table = table

    def contains(self, request_id: str, record: SourceRecord) -> bool:
        """Whether the request was carried out already."""
        with _bound_to(record.handle):
            return request_id.encode("utf-8") in self._table

    def add(self, request_id: str, record: SourceRecord) -> None:
        """Record the request as carried out (RocksDB now, changelog record enqueued)."""
        with _bound_to(record.handle):
            self._table[request_id.encode("utf-8")] = {"offset": record.offset}


class TopicSink:
    """:class:`stream.processing.Sink` on raw-bytes faust topics (``send_soon``: in order).

    Args:
        profile_updates: The profile-update topic.
        dead_letter: The dead-letter topic.
        repartition: Source topic name -> its repartition topic (may be empty).
        segment_events: The segment-events topic; ``None`` without segments.
        labels: The labels topic (corrections, :mod:`stream.labels`): an erasure tombstones the
            user there too; ``None``: not written.
    """

    def __init__(
        self,
        profile_updates: Any,
        dead_letter: Any,
        repartition: Mapping[str, Any] | None = None,
        segment_events: Any = None,
        labels: Any = None,
    ) -> None:
        self._updates = profile_updates
        self._dead_letter = dead_letter
        self._repartition = dict(repartition or {})
        self._segment_events = segment_events
        self._labels = labels

    def send_profile_update(self, user_id: str, value: bytes) -> Awaitable[object]:
        """Enqueue a profile update keyed by ``user_id``; await it for the broker's confirmation."""
        fut: Awaitable[object] = self._updates.send_soon(key=user_id.encode("utf-8"), value=value)
        return fut

    def send_tombstone(self, user_id: str) -> Awaitable[object]:
        """Enqueue a null-value record keyed by ``user_id`` on the profile-update topic and the
        labels topic; await it for the broker's confirmation of both."""
        key = user_id.encode("utf-8")
        sends = [self._updates.send_soon(key=key, value=None)]
        if self._labels is not None:
            sends.append(self._labels.send_soon(key=key, value=None))
        return asyncio.gather(*sends)

    def send_dead_letter(
        self, record: SourceRecord, headers: Sequence[tuple[str, bytes]]
    ) -> Awaitable[object]:
        """Enqueue ``record``'s original key and value with ``headers``; await to confirm."""
        fut: Awaitable[object] = self._dead_letter.send_soon(
            key=record.key, value=record.value, headers=list(headers)
        )
        return fut

    def send_segment_event(self, user_id: str, value: bytes) -> Awaitable[object]:
        """Enqueue a segment transition keyed by ``user_id``; await it for the confirmation.

        Raises:
            RuntimeError: The sink has no segment-events topic.
        """
        if self._segment_events is None:
            raise RuntimeError("no segment-events topic: segments are not configured")
        topic = self._segment_events
        fut: Awaitable[object] = topic.send_soon(key=user_id.encode("utf-8"), value=value)
        return fut

    def send_rerouted(
        self, record: SourceRecord, partition: int, headers: Sequence[tuple[str, bytes]]
    ) -> Awaitable[object]:
        """Enqueue ``record``'s key and value at ``partition`` of its topic's repartition topic.

        Raises:
            KeyError: ``record.topic`` has no repartition topic.
        """
        fut: Awaitable[object] = self._repartition[record.topic].send_soon(
            key=record.key, value=record.value, partition=partition, headers=list(headers)
        )
        return fut


def record_from_event(event: Any) -> SourceRecord:
    """A :class:`SourceRecord` of a faust event read from a raw-bytes topic."""
    message = event.message
    headers = message.headers or ()
    if hasattr(headers, "items"):
        headers = headers.items()
    return SourceRecord(
        topic=message.topic, partition=message.partition, offset=message.offset,
        key=message.key, value=message.value,
        headers=tuple((str(name), bytes(value or b"")) for name, value in headers),
        timestamp_s=message.timestamp, handle=event,
    )  # fmt: skip


async def consume_in_batches(
    stream: Any,
    process: Callable[[MicroBatch[SourceRecord]], Awaitable[BatchResult]],
    batch: BatchSettings,
) -> None:
    """The body of both agents: micro-batch, process, then ack the batch's events.

    Args:
        stream: The agent's faust stream.
        process: The ``process`` method of a :mod:`stream.processing` processor.
        batch: Micro-batch limits.

    Raises:
        Exception: Whatever ``process`` raises; the batch stays unacked and the worker stops.
    """
    source = stream.noack()
    batches = micro_batches(source.events(), max_batch_size=batch.max_batch_size,
                            max_wait_s=batch.max_wait_s)  # fmt: skip
    async with aclosing(batches) as micro:
        async for events in micro:
            records = tuple(record_from_event(event) for event in events.items)
            await process(MicroBatch(records, events.wait_s))
            for event in events.items:
                await source.ack(event)
