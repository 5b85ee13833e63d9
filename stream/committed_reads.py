"""Committed reads: the worker sees only records of committed transactions, and its committed
offsets reach past transaction markers.

Producers that write in Kafka transactions (``transactional.id``) leave two things in a partition
that a plain consumer mishandles: records of transactions that are still open or were aborted,
and control records (the commit or abort *markers*, one offset each) that are never delivered.

- **Isolation level.** faust 0.15 reads ``read_committed`` only under
  ``processing_guarantee="exactly_once"`` (which the local broker cannot run, ENVIRONMENT.md
  fault 2). :class:`ReadCommittedConsumerThread` sets it on the worker's aiokafka consumer at any
  guarantee: records of an open transaction are delivered once it commits, and those of an
  aborted one never (Kafka protocol; the local broker still hands out aborted records,
  ENVIRONMENT.md fault 6).
- **Markers at the tail.** faust commits the offset after the last *acknowledged* record and
  fills holes between delivered records itself, but a partition that ends in a marker (every
  transaction ends in one) keeps its committed offset one short of the log end: the lag never
  reaches 0. :class:`MarkerCommitter` acknowledges such trailing offsets once the partition has
  nothing in flight and the consumer's position has stood past them for one whole interval.

Both use faust-streaming private attributes (pinned to 0.15.x): the consumer thread's
``_create_worker_consumer``, aiokafka's ``_isolation_level``, and the consumer's ``_acked``,
``_acked_index``, ``_committed_offset``, ``_read_offset`` and ``_unacked_messages``.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types.tuples import ack_lock

__all__ = ["ISOLATION_LEVEL", "MarkerCommitter", "ReadCommittedConsumerThread", "trailing_offsets"]

logger = logging.getLogger(__name__)

ISOLATION_LEVEL = "read_committed"
"""The worker's consumer isolation level (Kafka ``isolation.level``)."""


class ReadCommittedConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """faust's aiokafka consumer thread, reading with ``isolation_level="read_committed"``."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._isolation_level = ISOLATION_LEVEL  # read by AIOKafkaConsumer.start()
        return consumer


def trailing_offsets(
    committed: int | None, read: int | None, position: int | None, in_flight: bool
) -> range:
    """The offsets between the committed offset and the consumer's position that hold nothing
    to process (transaction markers, or records of aborted transactions).

    Args:
        committed: The partition's committed offset (the next offset to process), or ``None``.
        read: The offset of the last record faust handed to the agents (after a seek: the
            offset sought to), or ``None``.
        position: The consumer's position: the offset of the next record it will return.
        in_flight: Whether records of the partition are delivered but not yet committed.

    Returns:
        ``range(committed, position)``, empty where anything is in flight or unknown, or where
        a record past the committed offset was handed out.
    """
    if in_flight or committed is None or position is None or position <= committed:
        return range(0)
    if read is not None and read > committed:
        return range(0)
    return range(committed, position)


@dataclass
class MarkerCommitter:
    """Commits past trailing transaction markers, from a faust timer.

    A candidate range must be the same on two ticks in a row before it is acknowledged: records
    that aiokafka returned but faust has not handed to the agents yet move the read offset
    within a tick, so a range that stood still for a whole interval holds no records.

    Args:
        sources: The source topics (changelog and output partitions are left alone).
    """

    sources: Collection[str]
    _pending: dict[Any, range] = field(default_factory=dict)

    async def tick(self, consumer: Any, monitor: Any) -> int:
        """Check every assigned source partition once; commit where markers were acknowledged.

        Args:
            consumer: The app's faust consumer (``app.consumer``).
            monitor: The app's monitor (``app.monitor``); its end offsets are refreshed so the
                lag metric sees an idle partition's end.

        Returns:
            The number of offsets acknowledged on this tick.
        """
        acked = 0
        assigned = [tp for tp in consumer.assignment() if tp.topic in self.sources]
        in_flight = {message.tp for message in list(consumer._unacked_messages)}
        for tp in assigned:
            monitor.track_tp_end_offset(tp, consumer.highwater(tp))
            found = trailing_offsets(
                consumer._committed_offset.get(tp),
                consumer._read_offset.get(tp),
                await consumer.position(tp),
                tp in in_flight or bool(consumer._acked.get(tp)),
            )
            if not found or self._pending.get(tp) != found:
                self._pending[tp] = found
                continue
            with ack_lock:
                consumer._acked[tp].extend(found)
                consumer._acked_index[tp].update(found)
            del self._pending[tp]
            acked += len(found)
            await consumer.commit({tp})
            logger.debug("committed past transaction markers partition=%s offsets=%s", tp, found)
        for tp in set(self._pending) - set(assigned):
            del self._pending[tp]
        return acked
