"""One micro-batch from start to finish: decode -> classify -> apply to profiles -> emit.

Plain asyncio, no faust or Kafka import. The faust agents (:mod:`stream.app`) hand in a
:class:`~stream.batching.MicroBatch` of :class:`SourceRecord` objects and acknowledge the records
only after the source's processor (:class:`CommentProcessor`, :class:`BehaviorProcessor`,
:class:`stream.erasure.ErasureProcessor`) returns; each is built with just the collaborators
its path needs.
The profile table and the output topics are reached through the protocols of :mod:`stream.ports`
(faust implementations in :mod:`stream.faust_adapters`, fakes in the unit tests).

Per micro-batch, in this order:

1. Decode every record (``events.decode_*``); an undecodable or invalid value, or a record whose key
   is not the event's ``user_id`` (the profile table is partitioned by the record key), gets an
   :class:`~models.contract.errors.EventError`.
2. Comments only: classify all decoded texts and their clauses
(:class:`models.contract.mixed.ClauseBatch`,
   unless ``PORTRAIT_MIXED__ENABLED`` is off) in one call, off the event loop
   (:class:`stream.inference.InferenceRunner`: bounded retries, then one call per text; a comment
   whose own text still fails gets an :class:`~models.contract.errors.InferenceError`, reason
   ``inference_failed``; a failed clause is left out of the mixed verdict).
3. Without any ``await`` (so the other agent cannot interleave): write each failed record to the
   dead-letter topic with its original key, value and headers plus the ``portrait.*`` headers; apply
   the others to their users' profiles in input order with their topic/partition/offset (a
   redelivered offset is a no-op); write each touched profile back once; enqueue one profile update
   per touched user. Enqueueing here keeps each user's updates in version order on the topic.
4. Wait until the broker has confirmed every dead-letter record and profile update of the batch.

A user is "touched" when at least one of their events in the batch was applied *or* was a duplicate:
after a crash between the table write and the acknowledgement, the redelivered batch rewrites the
profile (so the changelog has it) and re-emits its update with the same ``version``.

With pseudonymisation on, every decoded event's ``user_id`` (after the key check, which compares
the raw id) is replaced by its pseudonym (:class:`stream.privacy.Pseudonymiser`), so the table, the
profile updates and the log lines only ever see pseudonyms.

Erasure requests (``erasure.v1``, :class:`stream.erasure.ErasureProcessor`) are decoded and
checked the same way; each new one deletes the user's profile (a changelog tombstone) and enqueues a
tombstone on ``profile-updates.v1`` without an ``await`` in between, so no micro-batch of the other
agents interleaves; the user's next event starts a new profile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from concurrent.futures import Executor
from datetime import UTC, datetime
from typing import Any

from models.contract.errors import EventError, InferenceError
from models.contract.mixed import ClauseBatch, MixedRule
from models.contract.protocol import Classifier
from stream.aggregate import apply_behavior, apply_comment, duplicate_reason
from stream.batching import MicroBatch
from stream.decoding import Decoding, Item
from stream.events import (
    BehaviorEvent,
    CommentEvent,
    ProfileUpdate,
    decode_behavior,
    decode_comment,
)
from stream.inference import InferenceRunner, RetryPolicy
from stream.ports import BatchResult, ErasureLedger, Outputs, ProfileStore, Sink
from stream.profile import Profile, ScoredComment
from stream.records import (
    INFERENCE_FAILED,
    KEY_MISMATCH,
    E,
    SourceRecord,
    check_event_time,
    check_key,
    dead_letter_record_headers,
)
from stream.segments import SegmentEvaluator, segment_events
from stream.settings import MixedSettings, ProfileSettings
from stream.shadow import ShadowScorer

__all__ = [
    "INFERENCE_FAILED",
    "KEY_MISMATCH",
    "BatchResult",
    "BehaviorProcessor",
    "CommentProcessor",
    "ErasureLedger",
    "Outputs",
    "ProfileStore",
    "Sink",
    "SourceRecord",
    "check_key",
    "dead_letter_record_headers",
]

logger = logging.getLogger(__name__)

_DEFAULT_RETRY = RetryPolicy()
_DEFAULT_MIXED = MixedSettings()


def _utc_now() -> datetime:
    return datetime.now(UTC)


class _ProfilePath(Decoding):
    """Apply decoded events to profiles and emit one profile update per touched user.

    Args:
        outputs: The table, topics and metrics.
        profile_settings: Half-life, top-K and last-N of the profiles.
        model_version: ``model_version`` written into every profile update.
        log_user_ids: Whether user ids may appear in log lines.
        clock: Current time, timezone-aware UTC (``updated_at`` and end-to-end latency).
        pseudonymise, partitions, reroute_from: As for :class:`Decoding`.
        segments: Evaluated on every profile an applied event changed; its transitions go to
            ``segment-events.v1`` after the profile update (:mod:`stream.segments`).
    """

    def __init__(
        self,
        outputs: Outputs,
        *,
        profile_settings: ProfileSettings,
        model_version: str,
        log_user_ids: bool = False,
        clock: Callable[[], datetime] = _utc_now,
        pseudonymise: Callable[[str], str] | None = None,
        partitions: int | None = None,
        reroute_from: Collection[str] = (),
        segments: SegmentEvaluator | None = None,
    ) -> None:
        super().__init__(outputs, pseudonymise=pseudonymise, partitions=partitions,
                         reroute_from=reroute_from)  # fmt: skip
        self._segments = segments
        self._settings = profile_settings
        self._model_version = model_version
        self._log_user_ids = log_user_ids
        self._clock = clock

    def set_model_version(self, model_version: str) -> None:
        """The ``model_version`` the profile updates of this path name from now on."""
        self._model_version = model_version

    def _decode(
        self, records: Sequence[SourceRecord], decode: Callable[[bytes | None], E]
    ) -> list[Item]:
        """Decode, then refuse event times implausibly far from this clock
        (:func:`stream.records.check_event_time`)."""
        items = super()._decode(records, decode)
        now = self._clock()
        for item in items:
            if isinstance(item.event, CommentEvent | BehaviorEvent):
                try:
                    check_event_time(item.event.event_time, now)
                except EventError as exc:
                    item.event, item.error = None, exc
        return items

    def _load(self, user_id: str, record: SourceRecord) -> Profile:
        state = self._store.load(user_id, record)
        return Profile(user_id=user_id) if state is None else Profile.from_dict(state)

    def _apply(self, profile: Profile, item: Item) -> bool:
        record, event = item.record, item.event
        where: dict[str, Any] = {
            "topic": record.topic, "partition": record.partition, "offset": record.offset,
            "settings": self._settings,
        }  # fmt: skip
        if isinstance(event, CommentEvent):
            assert item.probabilities is not None
            scored = ScoredComment(event, item.probabilities, item.mixed, self._model_version,
                                   item.clause_labels)  # fmt: skip
            applied = apply_comment(profile, scored, **where)
            self._metrics.predictions.labels(label=scored.label).inc()
            if applied and scored.mixed:
                self._metrics.mixed_comments.inc()
            return applied
        assert isinstance(event, BehaviorEvent)
        return apply_behavior(profile, event, **where)

    async def _apply_and_emit(self, items: list[Item]) -> BatchResult:
        deliveries: list[Awaitable[object]] = []
        profiles: dict[str, Profile] = {}
        last_record: dict[str, SourceRecord] = {}
        event_times: list[datetime] = []
        applied = duplicates = dead = 0
        changed: set[str] = set()
        # No await from here to the end of the loop below: see the module docstring, step 3.
        for item in items:
            if item.error is not None:
                delivery, rerouted = self._divert(item)
                deliveries.append(delivery)
                dead += not rerouted
                continue
            assert isinstance(item.event, CommentEvent | BehaviorEvent)
            user_id = item.event.user_id
            if user_id not in profiles:
                profiles[user_id] = self._load(user_id, item.record)
            record, profile = item.record, profiles[user_id]
            reason = duplicate_reason(profile, item.event.event_id, record.topic,
                                      record.partition, record.offset)  # fmt: skip
            if self._apply(profile, item):
                applied += 1
                event_times.append(item.event.event_time)
                changed.add(user_id)
            else:
                duplicates += 1
                self._metrics.duplicates_skipped.labels(topic=record.topic, reason=reason).inc()
            last_record[user_id] = item.record
        now = self._clock()
        for user_id, record in last_record.items():
            profile = profiles[user_id]
            state = profile.to_dict()
            if self._segments is not None and user_id in changed:
                self._decide_segments(profile, state, now, record.partition)
            self._store.save(user_id, state, record)
            update = ProfileUpdate(
                user_id=user_id, version=profile.version, updated_at=now,
                model_version=self._model_version, profile=state,
            )  # fmt: skip
            deliveries.append(self._sink.send_profile_update(user_id, update.to_json_bytes()))
            for value in segment_events(profile, state):  # again after a redelivery: same version
                deliveries.append(self._sink.send_segment_event(user_id, value))
            if self._log_user_ids:
                logger.debug("profile update user_id=%s version=%d", user_id, update.version)
        if deliveries:
            await asyncio.gather(*deliveries)
        self._observe_emitted(len(last_record), event_times)
        result = BatchResult(len(items), dead, applied, duplicates, len(last_record))
        logger.debug("micro-batch done %s", _describe(result))
        return result

    def _decide_segments(
        self, profile: Profile, state: dict[str, Any], now: datetime, partition: int
    ) -> None:
        assert self._segments is not None
        self._segments.decide(profile, state, int(now.timestamp() * 1000), partition)

    def _observe_emitted(self, updates: int, event_times: list[datetime]) -> None:
        self._metrics.profile_updates.inc(updates)
        now = self._clock()
        for event_time in event_times:
            # an event time ahead of this clock (producer clock skew) counts as no latency
            latency_s = max(0.0, (now - event_time).total_seconds())
            self._metrics.end_to_end_latency_seconds.observe(latency_s)


class CommentProcessor(_ProfilePath):
    """``comments.v1``: decode, classify (with the clauses), apply, emit.

    Args:
        outputs: The table, topics and metrics.
        classifier: The sentiment model; its ``model_version`` goes into every profile update.
        profile_settings: Half-life, top-K and last-N of the profiles.
        executor: Runs ``classifier.predict_proba`` off the event loop (one thread is enough:
            onnxruntime parallelises inside a call); ``None`` = asyncio's default executor.
        retry: Retries of a failing inference call.
        mixed: Mixed-sentiment detection on the comments' clauses (:mod:`models.contract.mixed`).
        log_user_ids, clock, pseudonymise, partitions, reroute_from, segments: As for the other
            paths.

    Raises:
        ValueError: ``retry.attempts`` < 1.
    """

    def __init__(
        self,
        outputs: Outputs,
        classifier: Classifier,
        *,
        profile_settings: ProfileSettings,
        executor: Executor | None = None,
        retry: RetryPolicy = _DEFAULT_RETRY,
        mixed: MixedSettings = _DEFAULT_MIXED,
        log_user_ids: bool = False,
        clock: Callable[[], datetime] = _utc_now,
        pseudonymise: Callable[[str], str] | None = None,
        partitions: int | None = None,
        reroute_from: Collection[str] = (),
        segments: SegmentEvaluator | None = None,
    ) -> None:
        super().__init__(
            outputs, profile_settings=profile_settings, model_version=classifier.model_version,
            log_user_ids=log_user_ids, clock=clock, pseudonymise=pseudonymise,
            partitions=partitions, reroute_from=reroute_from, segments=segments,
        )  # fmt: skip
        metrics = outputs.metrics
        self._inference = InferenceRunner(
            classifier, metrics=metrics, executor=executor, retry=retry
        )
        self._next_model: Classifier | None = None
        self.shadow: ShadowScorer | None = None
        self._rule = MixedRule(mixed.threshold, mixed.max_clauses) if mixed.enabled else None

    def swap_model(self, classifier: Classifier) -> None:
        """Use ``classifier`` from the next micro-batch on (a hot swap, :mod:`stream.model_swap`).

        The batch in progress, if any, finishes with the model it started with: every verdict
        of one micro-batch comes from one model, and its ``model_version`` is recorded with it.
        """
        self._next_model = classifier

    @property
    def model_version(self) -> str:
        """The version of the model that scores the next micro-batch."""
        return (self._next_model or self._inference.classifier).model_version

    async def process(self, batch: MicroBatch[SourceRecord]) -> BatchResult:
        """Decode, classify, apply and emit one micro-batch of ``comments.v1`` records.

        Args:
            batch: The records, in source order.

        Returns:
            What the batch did.

        Raises:
            Exception: A profile state that cannot be read back (``ValueError``) or a dead-letter
                or profile-update record the broker did not accept: the batch must not be
                acknowledged (it will be delivered again).
        """
        if self._next_model is not None:  # between two micro-batches: swap
            model, self._next_model = self._next_model, None
            self._inference.classifier = model
            self._model_version = model.model_version
            logger.info("model swapped model_version=%s", model.model_version)
        self._metrics.batch_size.observe(len(batch.items))
        self._metrics.batch_wait_seconds.observe(batch.wait_s)
        items = self._decode(batch.items, decode_comment)
        valid = [item for item in items if item.event is not None]
        texts = [item.event.text for item in valid if isinstance(item.event, CommentEvent)]
        clauses = ClauseBatch.build(texts, self._rule)  # the comments first, then their clauses
        scores = await self._inference.classify(list(clauses.texts))
        rows = [None if isinstance(score, InferenceError) else score for score in scores]
        results = clauses.resolve(rows, self._rule)
        for item, score, result in zip(valid, scores[: len(valid)], results, strict=True):
            if result is None:
                assert isinstance(score, InferenceError)
                item.event, item.error = None, score
            else:
                item.probabilities, item.mixed = result.probabilities, result.mixed
                item.clause_labels = result.clause_labels
        if self.shadow is not None:  # the candidate, in the background: metrics only
            scored = [(i.event.text, i.probabilities) for i in valid
                      if isinstance(i.event, CommentEvent) and i.probabilities]  # fmt: skip
            self.shadow.offer([text for text, _ in scored], [probs for _, probs in scored])
        return await self._apply_and_emit(items)


class BehaviorProcessor(_ProfilePath):
    """``behavior.v1``: decode, apply, emit (see :class:`_ProfilePath` for the arguments)."""

    async def process(self, batch: MicroBatch[SourceRecord]) -> BatchResult:
        """Decode, apply and emit one micro-batch of ``behavior.v1`` records.

        Args:
            batch: The records, in source order.

        Returns:
            What the batch did.

        Raises:
            Exception: As for :meth:`CommentProcessor.process`; the batch must not be acknowledged.
        """
        self._metrics.batch_wait_seconds.observe(batch.wait_s)
        return await self._apply_and_emit(self._decode(batch.items, decode_behavior))


def _describe(result: BatchResult) -> str:
    return " ".join(f"{name}={getattr(result, name)}" for name in result.__dataclass_fields__)
