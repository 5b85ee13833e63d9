"""The worker's ports: what the processors of :mod:`stream.processing` read from and write to.

The faust implementations are in :mod:`stream.faust_adapters`; the unit tests use fakes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from stream.metrics import Metrics
from stream.records import SourceRecord

__all__ = ["BatchResult", "ErasureLedger", "Outputs", "ProfileStore", "Sink"]


class ProfileStore(Protocol):
    """The profile table: ``Profile.to_dict()`` states keyed by user id."""

    def load(self, user_id: str, record: SourceRecord) -> dict[str, Any] | None:
        """The stored state of ``user_id`` (``None`` if none); ``record``: the event to apply."""
        ...

    def save(self, user_id: str, state: dict[str, Any], record: SourceRecord) -> None:
        """Store ``state`` for ``user_id``; ``record`` is the user's last event in the batch."""
        ...

    def delete(self, user_id: str, record: SourceRecord) -> None:
        """Delete ``user_id``'s state (a no-op when there is none); ``record``: the erasure."""
        ...


class ErasureLedger(Protocol):
    """The erasure requests carried out (by ``request_id``; no user id), co-partitioned."""

    def contains(self, request_id: str, record: SourceRecord) -> bool:
        """Whether the request was carried out; ``record``: the request's record."""
        ...

    def add(self, request_id: str, record: SourceRecord) -> None:
        """Remember the request as carried out."""
        ...


class Sink(Protocol):
    """The output topics. Every method enqueues at once, in call order, and returns an awaitable
    that completes when the broker has confirmed the record (or raises if it cannot be written)."""

    def send_profile_update(self, user_id: str, value: bytes) -> Awaitable[object]:
        """Enqueue a ``profile-updates.v1`` record keyed by ``user_id``."""
        ...

    def send_dead_letter(
        self, record: SourceRecord, headers: Sequence[tuple[str, bytes]]
    ) -> Awaitable[object]:
        """Enqueue a dead-letter record with ``record``'s original key and value bytes."""
        ...

    def send_tombstone(self, user_id: str) -> Awaitable[object]:
        """Enqueue null-value records keyed by ``user_id`` on ``profile-updates.v1`` and
        ``labels.v1``: the user's profile and corrections are erased for every reader."""
        ...

    def send_segment_event(self, user_id: str, value: bytes) -> Awaitable[object]:
        """Enqueue a ``segment-events.v1`` record keyed by ``user_id``."""
        ...

    def send_rerouted(
        self, record: SourceRecord, partition: int, headers: Sequence[tuple[str, bytes]]
    ) -> Awaitable[object]:
        """Enqueue ``record``'s key and value on its topic's repartition topic, at ``partition``."""
        ...


@dataclass(frozen=True)
class BatchResult:
    """What one micro-batch did.

    Attributes:
        consumed: Records in the batch.
        dead_lettered: Records written to the dead-letter topic.
        applied: Events that changed a profile.
        duplicates: Redelivered events a profile had already applied.
        updates: Profile updates emitted.
    """

    consumed: int
    dead_lettered: int
    applied: int
    duplicates: int
    updates: int


@dataclass(frozen=True)
class Outputs:
    """Where every source's path writes.

    Attributes:
        store: The profile table.
        sink: The profile-update and dead-letter topics.
        metrics: Where to count.
    """

    store: ProfileStore
    sink: Sink
    metrics: Metrics
