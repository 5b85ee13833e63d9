"""Per-user profile aggregation: pure Python, bounded in size, JSON-serialisable state.

A :class:`Profile` is folded from a user's scored comments and behaviour events by
:func:`apply_comment` and :func:`apply_behavior`. It holds no faust or Kafka object: the worker
stores ``Profile.to_dict()`` in its table and rebuilds it with :meth:`Profile.from_dict`.

Decay over event time
---------------------
Decayed figures use exponential decay with half-life ``h = half_life_s`` over *event* time, the
standard exponentially weighted (time-decayed) aggregate, e.g. Cormode, Shkapenyuk, Srivastava and
Xu, "Forward Decay: A Practical Time Decay Model for Streaming Systems", ICDE 2009. Event ``i`` at
time ``t_i`` has weight::

    w_i = 2 ** ((t_i - t_ref) / h)

where ``t_ref`` is the latest event time seen for the user (comments and behaviour alike), so the
newest event has weight 1 and an event one half-life older has weight 1/2. The stored sums are kept
relative to ``t_ref``: when a newer event moves ``t_ref`` forward by ``d`` seconds, every stored sum
is multiplied by ``2 ** (-d / h)`` (a factor <= 1, so it cannot overflow); an older, out-of-order
event is added with its own weight ``w_i <= 1``. Each stored sum therefore equals
``sum_i w_i * x_i`` with the final ``t_ref`` whatever order the events came in: the state is the
same (up to float rounding) for any arrival order. Weights underflow to 0.0 for events more than
about 1000 half-lives older than ``t_ref`` (19 years at the default 7 days).

The figures:

- ``sentiment_score = sum_i w_i * s_i / sum_i w_i`` over comments, with ``s_i = p_pos - p_neg``, in
  [-1, 1]; ``None`` before the first comment. A ratio, so it does not depend on ``t_ref``.
- Category ``activity = sum_j w_j`` over the user's comments and behaviour events in that
  category (a decayed event count at ``t_ref``; every event counts 1 before decay), and its own
  ``sentiment_score`` as above over the comments in that category.

Mixed comments (:mod:`models.contract.mixed`) are counted, not decayed: ``mixed_count`` comments
out of
``comment_count`` had clauses of confident opposite polarity (``mixed_share`` is the ratio). Per
category, ``positive_count`` and ``negative_count`` count the comments by their whole-comment
arg-max label, as ``label_counts`` does: a mixed comment counts once, under that label (a comment
the model calls positive overall stays positive; the mixed flag says it also complains).

Bounds and idempotence
----------------------
The state is bounded whatever the user's history: 3 label counts, 7 behaviour counts, 24 hour
bins, at most ``top_k_categories`` categories (when a new category makes K + 1, the one with the
lowest activity is evicted, ties by name, and its sums are lost), the ``last_n_comments`` latest
comments by event time, and one applied offset per source partition. An event is applied at most
once: the profile remembers the last applied offset per ``"topic:partition"`` and ignores any event
at or below it (Kafka keeps offsets in order within a partition, and all of a user's events of one
topic share a partition). Eviction is the one order-dependent step: once a user has had more than K
categories, the kept set may depend on the arrival order (for instance on how comments and
behaviour events, which come from two topics, interleave).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter

from models.contract.labels import LABELS
from stream.events import CommentEvent
from stream.settings import ProfileSettings

__all__ = [
    "LABELS",
    "EVENT_ID_WINDOW",
    "SCHEMA_VERSION",
    "DAILY_DAYS",
    "DAY_MS",
    "CategoryStats",
    "DailyCounts",
    "Profile",
    "RecentComment",
    "ScoredComment",
    "decay_weight",
]

SCHEMA_VERSION = 1
"""Version of the :meth:`Profile.to_dict` layout; :meth:`Profile.from_dict` rejects others."""

DAILY_DAYS = 30
"""Days of per-day counts a profile keeps (``daily``): the UTC days of event time from 29 days
before the day of ``last_event_time_ms`` to that day. Enough for "in the last 7 / 14 / 28 days"
segment conditions; at most 30 small buckets."""

DAY_MS = 86_400_000
"""Milliseconds in a day."""

EVENT_ID_WINDOW = 32
"""Event ids a profile remembers for the ``event_id`` dedupe (those of its 32 latest events by
event time): a resent event older than the user's 32 latest counts again. 32 ids of up to 256
characters bound the profile (typically ~1.5 kB)."""

_PROBABILITY_TOLERANCE = 1e-3


def decay_weight(event_time_ms: int, reference_time_ms: int, half_life_s: float) -> float:
    """Exponential-decay weight ``2 ** ((t - t_ref) / half_life_s)`` (1 at ``t == t_ref``).

    Args:
        event_time_ms: Event time ``t``, epoch milliseconds.
        reference_time_ms: Reference time ``t_ref``, epoch milliseconds.
        half_life_s: Half-life in seconds, > 0.

    Returns:
        The weight; in (0, 1] for ``t <= t_ref`` (it underflows to 0.0 for events more than about
        1074 half-lives older than ``t_ref``).
    """
    return float(2.0 ** ((event_time_ms - reference_time_ms) / 1000.0 / half_life_s))


@dataclass(frozen=True)
class ScoredComment:
    """A comment event with its class probabilities.

    Attributes:
        event: The comment.
        probabilities: ``(p_negative, p_neutral, p_positive)``, each in [0, 1], summing to 1
            (within 1e-3); numpy scalars are converted to ``float``.
        mixed: Whether its clauses carry confident opposite polarities
            (:meth:`models.contract.mixed.MixedRule.is_mixed`); default False.
        model_version: ``model_version`` of the model that produced ``probabilities``.
        clause_labels: Each clause's arg-max label, in text order
            (:attr:`models.contract.mixed.MixedResult.clause_labels`); ``()`` without clauses.

    Raises:
        ValueError: ``probabilities`` is not three finite numbers in [0, 1] summing to 1.
    """

    event: CommentEvent
    probabilities: tuple[float, float, float]
    mixed: bool = False
    model_version: str | None = None
    clause_labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        probs = tuple(float(p) for p in self.probabilities)
        if len(probs) != len(LABELS) or not all(math.isfinite(p) and 0 <= p <= 1 for p in probs):
            raise ValueError("probabilities must be 3 finite numbers in [0, 1]")
        if abs(sum(probs) - 1.0) > _PROBABILITY_TOLERANCE:
            raise ValueError(f"probabilities must sum to 1 (sum {sum(probs):.6f})")
        object.__setattr__(self, "probabilities", probs)

    @property
    def label(self) -> str:
        """The predicted label: the arg-max of ``probabilities`` (the first one on a tie)."""
        return LABELS[max(range(len(LABELS)), key=self.probabilities.__getitem__)]

    @property
    def sentiment(self) -> float:
        """``p_positive - p_negative``, in [-1, 1]."""
        return self.probabilities[2] - self.probabilities[0]


@dataclass
class CategoryStats:
    """Decayed figures of one interest category, relative to the profile's reference time.

    Attributes:
        activity: ``sum_j w_j`` over the user's events in the category.
        sentiment_weight_sum: ``sum_i w_i`` over the user's comments in the category.
        sentiment_sum: ``sum_i w_i * (p_pos_i - p_neg_i)`` over the same comments.
        positive_count: Comments in the category whose predicted label is positive (a count, not
            decayed, since the category last entered the top-K).
        negative_count: Comments in the category whose predicted label is negative (a count, not
            decayed, since the category last entered the top-K).
    """

    activity: float = 0.0
    sentiment_weight_sum: float = 0.0
    sentiment_sum: float = 0.0
    positive_count: int = 0
    negative_count: int = 0

    @property
    def sentiment_score(self) -> float | None:
        """Decayed mean sentiment in the category; ``None`` without comments."""
        if self.sentiment_weight_sum <= 0.0:
            return None
        return self.sentiment_sum / self.sentiment_weight_sum

    def scale(self, factor: float) -> None:
        """Multiply every decayed sum by ``factor`` (moving the reference time forward)."""
        self.activity *= factor
        self.sentiment_weight_sum *= factor
        self.sentiment_sum *= factor


@dataclass(frozen=True)
class RecentComment:
    """One of the last N scored comments (no text).

    Attributes:
        event_id: The comment's event id.
        label: Predicted label, one of :data:`LABELS`.
        probabilities: ``(p_negative, p_neutral, p_positive)``.
        event_time_ms: Event time, epoch milliseconds.
        mixed: Whether the comment was mixed (clauses of confident opposite polarity).
        source: ``"topic:partition:offset"`` of the comment's record, where its text can be read
            back while the topic keeps it (``None`` in states written before it was kept).
        model_version: ``model_version`` of the model that scored it (``None`` likewise).
        clause_labels: For a mixed comment, each clause's label in text order (the clauses are
            ``models.contract.mixed.split_clauses`` of its text, which is not stored); ``[]``
            for a comment that is not mixed.
    """

    event_id: str
    label: str
    probabilities: tuple[float, float, float]
    event_time_ms: int
    mixed: bool = False
    source: str | None = None
    model_version: str | None = None
    clause_labels: tuple[str, ...] = ()


@dataclass
class DailyCounts:
    """What a user did on one UTC day (by event time).

    Attributes:
        day_ms: Start of the day (00:00 UTC), epoch milliseconds.
        events: Comments and behaviour events applied.
        comments: Comments.
        negative: Comments whose predicted label is ``negative``.
        positive: Comments whose predicted label is ``positive``.
        mixed: Mixed comments (clauses of confident opposite polarity).
        purchases: ``purchase`` events.
        purchase_value: Sum of their ``value`` (missing value = 0).
    """

    day_ms: int
    events: int = 0
    comments: int = 0
    negative: int = 0
    positive: int = 0
    mixed: int = 0
    purchases: int = 0
    purchase_value: float = 0.0


@dataclass
class Profile:
    """A user's profile state; see the module docstring for the definitions.

    Attributes:
        user_id: The user.
        version: Increases by one with every applied event.
        applied_offsets: ``"topic:partition"`` -> last applied offset.
        half_life_s: Half-life of the decayed figures, seconds (the setting at the last apply).
        comment_count: Comments applied.
        mixed_count: Comments applied that were mixed (clauses of confident opposite polarity).
        label_counts: Comments per predicted label (keys :data:`LABELS`).
        probability_sums: Sum of each class probability over comments (keys :data:`LABELS`).
        sentiment_weight_sum: ``sum_i w_i`` over comments (relative to ``last_event_time_ms``).
        sentiment_sum: ``sum_i w_i * (p_pos_i - p_neg_i)`` over comments.
        rating_count: Comments with a rating.
        rating_sum: Sum of those ratings.
        behavior_counts: Behaviour events per action (only actions seen).
        purchase_value_sum: Sum of ``value`` over ``purchase`` events (missing value = 0).
        categories: Interest category -> :class:`CategoryStats`; at most ``top_k_categories``.
        first_event_time_ms: Earliest event time seen, epoch ms (``None`` before any event).
        last_event_time_ms: Latest event time seen, epoch ms; the decay reference ``t_ref``.
        hour_histogram: Events per hour of day (UTC), 24 ints.
        recent_comments: The latest ``last_n_comments`` comments, ordered by event time ascending.
        recent_event_ids: ``event_id`` -> event time (epoch ms) of the :data:`EVENT_ID_WINDOW`
            applied events with the latest event times, ordered by (time, id): an event resent
            under one of these ids (a producer's retry, at a new offset) is a duplicate. Keeping
            the latest by event time, not by arrival, leaves the profile independent of the order
            events arrive in.
        daily: Per-day counts (:class:`DailyCounts`) of the last :data:`DAILY_DAYS` days up to
            the day of ``last_event_time_ms``, oldest first; an event older than that window is
            not counted there (the same whatever order events arrive in).
        segments: Segment name -> version of the definition the user is a member under
            (:mod:`stream.segments`; empty without segments).
        segment_transitions: The segment transitions decided at ``version``
            (``Transition.to_stored()``: segment, direction, definition version and the names of
            the fields the conditions read, whose values are this profile's), kept so that a
            redelivered batch emits the same ones again.
        schema: Layout version, :data:`SCHEMA_VERSION`.
    """

    user_id: str
    version: int = 0
    applied_offsets: dict[str, int] = field(default_factory=dict)
    half_life_s: float = ProfileSettings().half_life_s
    comment_count: int = 0
    mixed_count: int = 0
    label_counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LABELS, 0))
    probability_sums: dict[str, float] = field(default_factory=lambda: dict.fromkeys(LABELS, 0.0))
    sentiment_weight_sum: float = 0.0
    sentiment_sum: float = 0.0
    rating_count: int = 0
    rating_sum: float = 0.0
    behavior_counts: dict[str, int] = field(default_factory=dict)
    purchase_value_sum: float = 0.0
    categories: dict[str, CategoryStats] = field(default_factory=dict)
    first_event_time_ms: int | None = None
    last_event_time_ms: int | None = None
    hour_histogram: list[int] = field(default_factory=lambda: [0] * 24)
    recent_comments: list[RecentComment] = field(default_factory=list)
    recent_event_ids: dict[str, int] = field(default_factory=dict)
    daily: list[DailyCounts] = field(default_factory=list)
    segments: dict[str, str] = field(default_factory=dict)
    segment_transitions: list[dict[str, Any]] = field(default_factory=list)
    schema: int = SCHEMA_VERSION

    @property
    def mean_probabilities(self) -> dict[str, float] | None:
        """Mean class probabilities over comments (keys :data:`LABELS`); ``None`` without any."""
        if self.comment_count == 0:
            return None
        return {label: self.probability_sums[label] / self.comment_count for label in LABELS}

    @property
    def mixed_share(self) -> float | None:
        """``mixed_count / comment_count``: the share of mixed comments; ``None`` without any."""
        return self.mixed_count / self.comment_count if self.comment_count else None

    @property
    def sentiment_score(self) -> float | None:
        """Decayed weighted mean of ``p_pos - p_neg`` over comments, in [-1, 1]; else ``None``."""
        if self.sentiment_weight_sum <= 0.0:
            return None
        return self.sentiment_sum / self.sentiment_weight_sum

    @property
    def rating_mean(self) -> float | None:
        """Mean rating over rated comments; ``None`` without any."""
        return self.rating_sum / self.rating_count if self.rating_count else None

    def interests(self) -> list[tuple[str, CategoryStats]]:
        """Categories by decayed activity, highest first (ties by name)."""
        return sorted(self.categories.items(), key=lambda kv: (-kv[1].activity, kv[0]))

    def to_dict(self) -> dict[str, Any]:
        """The state as a JSON-ready dict (every field above, times as epoch ms), plus derived
        figures that :meth:`from_dict` ignores: ``mean_probabilities``, ``mixed_share``,
        ``sentiment_score``, ``rating_mean`` and ``interests`` (``[{"category", "activity",
        "sentiment_score", "positive_count", "negative_count"}]``, highest activity first)."""
        data: dict[str, Any] = _ADAPTER.dump_python(self, mode="json")
        data["mean_probabilities"] = self.mean_probabilities
        data["mixed_share"] = self.mixed_share
        data["sentiment_score"] = self.sentiment_score
        data["rating_mean"] = self.rating_mean
        data["interests"] = [
            {"category": name, "activity": stats.activity, "sentiment_score": stats.sentiment_score,
             "positive_count": stats.positive_count, "negative_count": stats.negative_count}
            for name, stats in self.interests()
        ]  # fmt: skip
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Profile:
        """Rebuild a profile from :meth:`to_dict` output (e.g. a table value).

        A state written before a field existed loads with that field's default (``mixed_count``,
        the categories' ``positive_count`` and ``negative_count`` and the recent comments'
        ``mixed`` start at 0 / False).

        Raises:
            ValueError: ``data`` is not a profile of schema :data:`SCHEMA_VERSION`, or a field is
                missing or mistyped (a ``pydantic.ValidationError``, which names the field).
        """
        if not isinstance(data, dict) or data.get("schema") != SCHEMA_VERSION:
            raise ValueError(f"not a profile dict of schema {SCHEMA_VERSION}")
        profile = _ADAPTER.validate_python(data)
        if len(profile.hour_histogram) != 24 or set(profile.label_counts) != set(LABELS):
            raise ValueError(
                "hour_histogram must have 24 bins and label_counts keys " + str(LABELS)
            )
        return profile


_ADAPTER = TypeAdapter(Profile)
