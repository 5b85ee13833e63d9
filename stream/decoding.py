"""Decoding a micro-batch's records and diverting the ones that fail: the first and last step
of every processor (:mod:`stream.processing`, :mod:`stream.erasure`).

A record that cannot be decoded or validated, whose key is not its ``user_id``, or that sits off
its key's partition gets an :class:`~models.contract.errors.EventError`; :meth:`Decoding._divert`
re-routes a record off its partition through its topic's repartition topic when that topic
allows it (``PORTRAIT_TOPICS__WRONG_PARTITION=reroute``) and dead-letters every other failure
with its original bytes and the ``portrait.*`` headers.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass

from models.contract.errors import EventError, InferenceError
from stream.events import BehaviorEvent, CommentEvent, ErasureRequest
from stream.partitioner import user_partition
from stream.ports import Outputs
from stream.records import (
    HEADER_REROUTED_FROM,
    INFERENCE_FAILED,
    WRONG_PARTITION,
    E,
    SourceRecord,
    dead_letter_record_headers,
    decode_record,
)

__all__ = ["Decoding", "Item"]

logger = logging.getLogger("stream.processing")  # the processors' log lines, as before


@dataclass
class Item:
    """One record's way through the batch: an event to apply, or an error to dead-letter."""

    record: SourceRecord
    event: CommentEvent | BehaviorEvent | ErasureRequest | None = None
    error: EventError | InferenceError | None = None
    probabilities: tuple[float, float, float] | None = None
    mixed: bool = False
    clause_labels: tuple[str, ...] = ()


class Decoding:
    """What every path does first and last: decode records, dead-letter the failed ones.

    Args:
        outputs: The table, topics and metrics.
        pseudonymise: Maps a user id to the id stored and emitted (a
            :class:`stream.privacy.Pseudonymiser`); ``None`` keeps user ids as they are.
        partitions: Partitions of the source topics: a record off its key's partition is
            dead-lettered (``wrong_partition``); ``None`` skips the check.
        reroute_from: Source topics whose records off their key's partition are re-routed
            (``Sink.send_rerouted``) instead; records of other topics (the repartition topics
            themselves) are dead-lettered, so a record is re-routed at most once.
    """

    def __init__(
        self,
        outputs: Outputs,
        *,
        pseudonymise: Callable[[str], str] | None = None,
        partitions: int | None = None,
        reroute_from: Collection[str] = (),
    ) -> None:
        self._store = outputs.store
        self._sink = outputs.sink
        self._metrics = outputs.metrics
        self._pseudonymise = pseudonymise
        self._partitions = partitions
        self._reroute_from = frozenset(reroute_from) if partitions is not None else frozenset()
        self._rerouted_partitions: set[tuple[str, int]] = set()

    def _decode(
        self, records: Sequence[SourceRecord], decode: Callable[[bytes | None], E]
    ) -> list[Item]:
        items = []
        for record in records:
            self._metrics.events_consumed.labels(topic=record.topic).inc()
            try:
                event = decode_record(record, decode, self._pseudonymise, self._partitions)
                items.append(Item(record, event=event))
            except EventError as exc:
                items.append(Item(record, error=exc))
        return items

    def _divert(self, item: Item) -> tuple[Awaitable[object], bool]:
        """Re-route a record off its key's partition, if its topic allows; else dead-letter it.

        Returns:
            The broker confirmation to await, and whether the record was re-routed.
        """
        record, error = item.record, item.error
        if not (isinstance(error, EventError) and error.reason == WRONG_PARTITION
                and record.topic in self._reroute_from and record.key is not None):  # fmt: skip
            return self._dead_letter(item), False
        assert self._partitions is not None
        partition = user_partition(record.key.decode("utf-8"), self._partitions)
        self._metrics.events_rerouted.labels(topic=record.topic).inc()
        log = logger.debug
        if (record.topic, record.partition) not in self._rerouted_partitions:
            self._rerouted_partitions.add((record.topic, record.partition))
            log = logger.warning  # once per source partition: the producer's partitioner is off
        log("re-routed to partition %d: record on the wrong partition topic=%s partition=%d "
            "offset=%d (the producer does not partition by murmur2 of the key)",
            partition, record.topic, record.partition, record.offset)  # fmt: skip
        origin = f"{record.topic}:{record.partition}:{record.offset}".encode()
        headers = [*record.headers, (HEADER_REROUTED_FROM, origin)]
        return self._sink.send_rerouted(record, partition, headers), True

    def _dead_letter(self, item: Item) -> Awaitable[object]:
        record, error = item.record, item.error
        assert error is not None
        reason = error.reason if isinstance(error, EventError) else INFERENCE_FAILED
        self._metrics.events_dead_lettered.labels(topic=record.topic, reason=reason).inc()
        logger.warning(
            "dead-lettered topic=%s partition=%d offset=%d reason=%s error=%s",
            record.topic, record.partition, record.offset, reason, type(error).__name__,
        )  # fmt: skip
        return self._sink.send_dead_letter(record, dead_letter_record_headers(record, error))
