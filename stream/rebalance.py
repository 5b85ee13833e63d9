"""A fix to faust's consumer: after a rebalance, no source record reaches the agents twice.

See :class:`SeekFirstConsumer` and docs/reliability.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka

from stream.committed_reads import ReadCommittedConsumerThread

__all__ = ["SeekFirstConsumer", "SeekFirstTransport", "uncommitted_source_partitions"]

logger = logging.getLogger(__name__)


def uncommitted_source_partitions(
    committed: Mapping[Any, int | None], is_changelog: Callable[[Any], bool]
) -> list[Any]:
    """The source partitions that the group never committed an offset for.

    Args:
        committed: What ``seek_to_committed`` returned: partition -> committed offset, ``None``
            (or 0) where the group has none.
        is_changelog: Whether a partition belongs to a table's changelog topic (recovery
            positions those itself).

    Returns:
        The partitions to rewind to their first offset, in the order given.
    """
    return [tp for tp, offset in committed.items() if not offset and not is_changelog(tp)]


class SeekFirstConsumer(faust_aiokafka.Consumer):
    """faust's aiokafka consumer, with the seek after a rebalance made atomic for the streams.

    After a rebalance faust recovers the tables, then resumes the source partitions and only
    then seeks them to their committed offsets (one OffsetFetch per partition). Records that
    aiokafka had read ahead were handed to the agents in between, and read again after the
    seek: faust's read-offset filter and its acknowledged-offset list assume each offset
    arrives once, so the restarted worker dropped runs of records (profiles left behind) and
    its offset commits stalled (faust-streaming 0.15.3; 2 of 55 kill -9 trials and 3 CI runs,
    docs/reliability.md). Here the partitions faust resumed stay paused until the seek is done,
    and a partition without a committed offset is rewound to its first offset (what
    ``consumer_auto_offset_reset="earliest"`` means) instead of being left where the fetcher
    had read ahead to. Its consumer thread reads committed records only
    (:class:`stream.committed_reads.ReadCommittedConsumerThread`).
    """

    def _new_consumer_thread(self) -> ReadCommittedConsumerThread:
        return ReadCommittedConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def perform_seek(self) -> None:
        """Seek the source partitions to their committed offsets before they deliver again."""
        resumed = {tp for tp in self._get_active_partitions() if not self._is_changelog_tp(tp)}
        self.pause_partitions(resumed)
        try:
            await super().perform_seek()
        finally:
            self.resume_partitions(resumed)

    async def seek_to_committed(self) -> Mapping[Any, int]:
        """Seek every assigned partition to its committed offset, and a source partition without
        one to offset 0 (aiokafka resets an offset out of range to the first one).

        Returns:
            Partition -> committed offset (``None`` where there is none), as faust's returns it.
        """
        committed = await super().seek_to_committed()
        rewind = uncommitted_source_partitions(committed, self._is_changelog_tp)
        for tp in rewind:  # no broker round trip here: the seek stays synchronous
            self._thread.seek(tp, 0)
        if rewind:
            logger.info("no committed offset: reading from the first offset partitions=%s",
                        sorted(f"{tp.topic}[{tp.partition}]" for tp in rewind))  # fmt: skip
        return committed


class SeekFirstTransport(faust_aiokafka.Transport):
    """faust's aiokafka transport with :class:`SeekFirstConsumer`."""

    Consumer = SeekFirstConsumer
