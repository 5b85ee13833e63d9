"""Re-evaluating stored profiles against the segments: after a definition change and as time
passes, without waiting for a user's next event.

The worker writes a *tick* (``{"now_ms": T}``, ``T`` its wall clock) to each partition it owns of
the internal topic ``<app_id>-segment-ticks`` once every rebalance has completed (so at start-up,
after a definition change, and when partitions move) and then every
``PORTRAIT_SEGMENTS__REEVALUATE_INTERVAL_S``. The topic is co-partitioned with the profile table;
its agent evaluates every profile stored in the tick's partition at ``now_ms = T``
(:class:`SegmentSweep`). A profile whose memberships change gets a new ``version``, the tick's
offset in ``applied_offsets`` (so a redelivered tick decides nothing twice: it re-emits what was
decided, with the same version) and a profile update and segment events, like an applied event.
Going through Kafka keeps the sweep inside the table's partition ownership and its exactly-once
rule, and makes ``now_ms`` the same on a redelivery.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from stream.batching import MicroBatch
from stream.events import ProfileUpdate
from stream.ports import BatchResult, Outputs, ProfileStore
from stream.profile import Profile
from stream.records import SourceRecord
from stream.segments import SegmentEvaluator, segment_events

__all__ = ["SegmentSweep", "StoredUsers", "tick_value"]

logger = logging.getLogger(__name__)

_CHUNK = 200
"""Profiles evaluated between two yields to the event loop (and two waits for the broker)."""


class StoredUsers(Protocol):
    """A profile store that can list the users it holds in one partition."""

    def user_ids(self, record: SourceRecord) -> list[str]:
        """Every user id stored in ``record``'s partition."""
        ...


def tick_value(now_ms: int) -> bytes:
    """The value of a tick record: ``{"now_ms": now_ms}`` as UTF-8 JSON."""
    return json.dumps({"now_ms": now_ms}).encode()


def _utc_now() -> datetime:
    return datetime.now(UTC)


class SegmentSweep:
    """The agent body of ``<app_id>-segment-ticks``: re-evaluate the partition's profiles.

    Args:
        outputs: The table (also a :class:`StoredUsers`), the topics and the metrics.
        users: Lists the stored users of a partition (the same table as ``outputs.store``).
        segments: The segments.
        model_version: ``model_version`` written into the profile updates.
        clock: ``updated_at`` of the profile updates.
    """

    def __init__(
        self,
        outputs: Outputs,
        users: StoredUsers,
        segments: SegmentEvaluator,
        *,
        model_version: str,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._store: ProfileStore = outputs.store
        self._sink = outputs.sink
        self._metrics = outputs.metrics
        self._users = users
        self._segments = segments
        self._model_version = model_version
        self._clock = clock

    async def process(self, batch: MicroBatch[SourceRecord]) -> BatchResult:
        """Sweep the partition of every tick in the batch, in order.

        Returns:
            ``applied`` = profiles whose memberships changed, ``duplicates`` = profiles the tick
            had changed already (re-emitted), ``updates`` = profile updates sent.

        Raises:
            Exception: A record the broker did not accept: the batch stays unacknowledged.
        """
        applied = duplicates = dead = 0
        for record in batch.items:
            try:
                now_ms = int(json.loads(record.value or b"")["now_ms"])
            except (ValueError, KeyError, TypeError):
                logger.warning("ignored a malformed segment tick partition=%d offset=%d",
                               record.partition, record.offset)  # fmt: skip
                dead += 1
                continue
            changed, again = await self._sweep(record, now_ms)
            applied, duplicates = applied + changed, duplicates + again
        updates = applied + duplicates
        self._metrics.profile_updates.inc(updates)
        return BatchResult(len(batch.items), dead, applied, duplicates, updates)

    async def _sweep(self, record: SourceRecord, now_ms: int) -> tuple[int, int]:
        where = f"{record.topic}:{record.partition}"
        changed = again = 0
        members: Counter[str] = Counter()
        deliveries: list[Awaitable[object]] = []
        user_ids = self._users.user_ids(record)
        for i, user_id in enumerate(user_ids):
            state = self._store.load(user_id, record)
            if state is None:
                continue
            profile = Profile.from_dict(state)
            seen = profile.applied_offsets.get(where, -1)
            if seen > record.offset:
                members.update(profile.segments.keys())
                continue
            if seen == record.offset:  # this tick changed it already: emit that again
                again += 1
            else:
                transitions = self._segments.decide(profile, state, now_ms)
                if not transitions:
                    members.update(profile.segments.keys())
                    continue
                profile.version += 1
                profile.applied_offsets[where] = record.offset
                state = profile.to_dict()
                self._store.save(user_id, state, record)
                changed += 1
            members.update(profile.segments.keys())
            deliveries += self._emit(profile, state)
            if (i + 1) % _CHUNK == 0:
                await asyncio.gather(*deliveries)
                deliveries = []
        if deliveries:
            await asyncio.gather(*deliveries)
        if self._segments.members is not None:
            self._segments.members.count_partition(record.partition, members)
        logger.info("segment sweep partition=%d users=%d changed=%d re_emitted=%d",
                    record.partition, len(user_ids), changed, again)  # fmt: skip
        return changed, again

    def _emit(self, profile: Profile, state: dict[str, Any]) -> list[Awaitable[object]]:
        update = ProfileUpdate(user_id=profile.user_id, version=profile.version,
                               updated_at=self._clock(), model_version=self._model_version,
                               profile=state)  # fmt: skip
        sends = [self._sink.send_profile_update(profile.user_id, update.to_json_bytes())]
        sends += [self._sink.send_segment_event(profile.user_id, value)
                  for value in segment_events(profile, state)]  # fmt: skip
        return sends
