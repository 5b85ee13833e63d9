"""``erasure.v1``: carry out erasure requests (see :class:`ErasureProcessor`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from stream.batching import MicroBatch
from stream.decoding import Decoding
from stream.events import ErasureRequest, decode_erasure
from stream.ports import BatchResult, ErasureLedger, Outputs
from stream.records import SourceRecord

__all__ = ["ErasureProcessor"]

logger = logging.getLogger(__name__)


class ErasureProcessor(Decoding):
    """``erasure.v1``: delete profiles, tombstone their updates, record the requests carried out.

    Args:
        outputs: The table, topics and metrics.
        ledger: The erasure requests carried out.
        pseudonymise: As for the other paths (requests name the raw user id).
        partitions: As for the other paths.
    """

    def __init__(
        self,
        outputs: Outputs,
        ledger: ErasureLedger,
        *,
        pseudonymise: Callable[[str], str] | None = None,
        partitions: int | None = None,
    ) -> None:
        super().__init__(outputs, pseudonymise=pseudonymise, partitions=partitions)
        self._ledger = ledger

    async def process(self, batch: MicroBatch[SourceRecord]) -> BatchResult:
        """Carry out one micro-batch of ``erasure.v1`` requests, in order.

        A new request deletes the user's profile and enqueues a tombstone for the user on the
        profile-update topic (no ``await`` in between); once the broker confirmed the tombstones,
        the requests are written to the ledger, so a redelivered request (crash before the commit)
        is skipped instead of erasing the user's newer events. Invalid ones are dead-lettered.

        Args:
            batch: The records, in source order.

        Returns:
            What the batch did: ``applied`` = erasures carried out (= ``updates``, tombstones
            sent), ``duplicates`` = requests the ledger had already.

        Raises:
            Exception: A dead-letter record or tombstone the broker did not accept: the batch must
                not be acknowledged (it will be delivered again).
        """
        items = self._decode(batch.items, decode_erasure)
        deliveries: list[Awaitable[object]] = []
        done: list[tuple[str, SourceRecord]] = []
        duplicates = 0
        for item in items:  # no await in this loop: see the module docstring
            request, record = item.event, item.record
            if not isinstance(request, ErasureRequest):  # undecodable or invalid
                deliveries.append(self._dead_letter(item))
            elif self._ledger.contains(request.request_id, record):
                duplicates += 1
            else:
                self._store.delete(request.user_id, record)
                deliveries.append(self._sink.send_tombstone(request.user_id))
                done.append((request.request_id, record))
        if deliveries:
            await asyncio.gather(*deliveries)
        for request_id, record in done:
            self._ledger.add(request_id, record)
            logger.info("erasure done topic=%s partition=%d offset=%d request_id=%s",
                        record.topic, record.partition, record.offset, request_id)  # fmt: skip
        dead = len(items) - len(done) - duplicates
        return BatchResult(len(items), dead, len(done), duplicates, len(done))
