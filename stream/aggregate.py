"""How one event changes a profile: the update rules of :mod:`stream.profile`'s state.

Each rule claims the event's offset first (a redelivered offset changes nothing), moves the
profile's reference time forward with decay (forward decay; Cormode et al., ICDE 2009, as the
:mod:`stream.profile` docstring explains), then adds the event.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from models.contract.labels import LABELS
from stream.events import BEHAVIOR_ACTIONS, BehaviorEvent
from stream.profile import (
    DAILY_DAYS,
    DAY_MS,
    EVENT_ID_WINDOW,
    CategoryStats,
    DailyCounts,
    Profile,
    RecentComment,
    ScoredComment,
    decay_weight,
)
from stream.settings import ProfileSettings

__all__ = ["apply_behavior", "apply_comment", "duplicate_reason", "summary"]


def duplicate_reason(profile: Profile, event_id: str, topic: str, partition: int, offset: int
                     ) -> str | None:  # fmt: skip
    """Why an event is a duplicate of one the profile applied, or ``None`` for a new one.

    Returns:
        ``"offset"``: the source offset (or a later one) was applied (a redelivery);
        ``"event_id"``: a new offset, but the event id is among the profile's
        ``recent_event_ids`` (a resend); ``None`` otherwise. Reads only.
    """
    last = profile.applied_offsets.get(f"{topic}:{partition}")
    if last is not None and offset <= last:
        return "offset"
    return "event_id" if event_id in profile.recent_event_ids else None


def _claim(
    profile: Profile, event_id: str, event_time_ms: int, topic: str, partition: int, offset: int
) -> bool:
    """Record the offset as applied (a resent event id's offset too: it is done); True when the
    event is new, and then remember its id among the :data:`EVENT_ID_WINDOW` with the latest
    event times."""
    reason = duplicate_reason(profile, event_id, topic, partition, offset)
    if reason == "offset":
        return False
    profile.applied_offsets[f"{topic}:{partition}"] = offset
    if reason == "event_id":
        return False
    kept = sorted({**profile.recent_event_ids, event_id: event_time_ms}.items(),
                  key=lambda item: (item[1], item[0]))[-EVENT_ID_WINDOW:]  # fmt: skip
    profile.recent_event_ids = dict(kept)
    return True


def _observe_time(profile: Profile, event_time_ms: int) -> float:
    """Move the reference time forward if needed; return the event's decay weight."""
    h = profile.half_life_s
    last = profile.last_event_time_ms
    if last is None or event_time_ms > last:
        if last is not None:
            factor = decay_weight(last, event_time_ms, h)
            profile.sentiment_weight_sum *= factor
            profile.sentiment_sum *= factor
            for stats in profile.categories.values():
                stats.scale(factor)
        profile.last_event_time_ms = last = event_time_ms
    if profile.first_event_time_ms is None or event_time_ms < profile.first_event_time_ms:
        profile.first_event_time_ms = event_time_ms
    hour = datetime.fromtimestamp(event_time_ms / 1000.0, tz=UTC).hour
    profile.hour_histogram[hour] += 1
    return decay_weight(event_time_ms, last, h)


def _count_day(profile: Profile, event_time_ms: int) -> DailyCounts | None:
    """The day bucket of an event (created if needed), or ``None`` when the day is older than
    the :data:`DAILY_DAYS` window ending on the day of ``last_event_time_ms``; buckets that fell
    out of the window are dropped. Call after :func:`_observe_time`."""
    assert profile.last_event_time_ms is not None
    first_day = (profile.last_event_time_ms // DAY_MS - (DAILY_DAYS - 1)) * DAY_MS
    day = event_time_ms // DAY_MS * DAY_MS
    profile.daily = [bucket for bucket in profile.daily if bucket.day_ms >= first_day]
    if day < first_day:
        return None
    for bucket in profile.daily:
        if bucket.day_ms == day:
            break
    else:
        bucket = DailyCounts(day)
        profile.daily.append(bucket)
        profile.daily.sort(key=lambda b: b.day_ms)
    bucket.events += 1
    return bucket


def _add_category(
    profile: Profile, category: str | None, weight: float, scored: ScoredComment | None, top_k: int
) -> None:
    """Add one event (``scored``: a comment) to a category, then evict down to ``top_k``."""
    if category is None:
        return
    stats = profile.categories.setdefault(category, CategoryStats())
    stats.activity += weight
    if scored is not None:
        stats.sentiment_weight_sum += weight
        stats.sentiment_sum += weight * scored.sentiment
        stats.positive_count += int(scored.label == "positive")
        stats.negative_count += int(scored.label == "negative")
    while len(profile.categories) > top_k:
        lowest = min(profile.categories.items(), key=lambda kv: (kv[1].activity, kv[0]))[0]
        del profile.categories[lowest]


def _add_recent(profile: Profile, recent: RecentComment, last_n: int) -> None:
    """Insert by event time (ties by event id) and keep the ``last_n`` latest."""
    profile.recent_comments.append(recent)
    profile.recent_comments.sort(key=lambda c: (c.event_time_ms, c.event_id))
    del profile.recent_comments[: max(0, len(profile.recent_comments) - last_n)]


def apply_comment(
    profile: Profile,
    scored: ScoredComment,
    *,
    topic: str,
    partition: int,
    offset: int,
    settings: ProfileSettings,
) -> bool:
    """Fold one scored comment into the profile, at most once per source offset.

    Args:
        profile: The user's profile; mutated.
        scored: The comment and its probabilities.
        topic: Source topic of the comment.
        partition: Source partition.
        offset: Source offset; an offset at or below the last applied one of ``topic:partition``
            is a duplicate delivery and leaves the profile untouched.
        settings: Half-life, top-K and last-N.

    Returns:
        True when the profile changed (``version`` incremented), False for a duplicate.
    """
    event = scored.event
    if not _claim(profile, event.event_id, event.event_time_ms, topic, partition, offset):
        return False
    profile.half_life_s = settings.half_life_s
    event, probs = scored.event, scored.probabilities
    weight = _observe_time(profile, event.event_time_ms)
    profile.comment_count += 1
    profile.mixed_count += int(scored.mixed)
    profile.label_counts[scored.label] += 1
    for label, p in zip(LABELS, probs, strict=True):
        profile.probability_sums[label] += p
    profile.sentiment_weight_sum += weight
    profile.sentiment_sum += weight * scored.sentiment
    if event.rating is not None:
        profile.rating_count += 1
        profile.rating_sum += event.rating
    _add_category(profile, event.category, weight, scored, settings.top_k_categories)
    day = _count_day(profile, event.event_time_ms)
    if day is not None:
        day.comments += 1
        day.negative += int(scored.label == "negative")
        day.positive += int(scored.label == "positive")
        day.mixed += int(scored.mixed)
    recent = RecentComment(event.event_id, scored.label, probs, event.event_time_ms, scored.mixed,
                           f"{topic}:{partition}:{offset}", scored.model_version,
                           scored.clause_labels if scored.mixed else ())  # fmt: skip
    _add_recent(profile, recent, settings.last_n_comments)
    profile.version += 1
    return True


def apply_behavior(
    profile: Profile,
    event: BehaviorEvent,
    *,
    topic: str,
    partition: int,
    offset: int,
    settings: ProfileSettings,
) -> bool:
    """Fold one behaviour event into the profile, at most once per source offset.

    Args:
        profile: The user's profile; mutated.
        event: The behaviour event.
        topic: Source topic of the event.
        partition: Source partition.
        offset: Source offset; at or below the last applied one of ``topic:partition`` is a no-op.
        settings: Half-life and top-K.

    Returns:
        True when the profile changed (``version`` incremented), False for a duplicate.
    """
    if not _claim(profile, event.event_id, event.event_time_ms, topic, partition, offset):
        return False
    profile.half_life_s = settings.half_life_s
    weight = _observe_time(profile, event.event_time_ms)
    profile.behavior_counts[event.action] = profile.behavior_counts.get(event.action, 0) + 1
    if event.action == "purchase" and event.value is not None:
        profile.purchase_value_sum += event.value
    _add_category(profile, event.category, weight, None, settings.top_k_categories)
    day = _count_day(profile, event.event_time_ms)
    if day is not None and event.action == "purchase":
        day.purchases += 1
        day.purchase_value += event.value or 0.0
    profile.version += 1
    return True


def summary(profile: Profile, now: datetime, *, top: int = 3) -> dict[str, Any]:
    """A short display view of a profile, with decayed activity brought forward to ``now``.

    Args:
        profile: The profile.
        now: Display time, timezone-aware; activity is multiplied by
            ``2 ** ((t_ref - now) / half_life_s)`` when ``now`` is after ``t_ref``.
        top: Interests shown.

    Returns:
        A dict with ``user_id``, ``version``, ``comments``, ``label_shares``, ``mixed_share``
        (0.0 without comments), ``sentiment_score``, ``rating_mean``, ``behavior_counts``,
        ``top_interests`` (a list of ``(category, activity_at_now, sentiment_score)``) and
        ``last_event`` (datetime or None).
    """
    now_ms = int(now.timestamp() * 1000)
    ref = profile.last_event_time_ms
    factor = 1.0 if ref is None or now_ms <= ref else decay_weight(ref, now_ms, profile.half_life_s)
    n = profile.comment_count
    return {
        "user_id": profile.user_id,
        "version": profile.version,
        "comments": n,
        "label_shares": {lab: (c / n if n else 0.0) for lab, c in profile.label_counts.items()},
        "mixed_share": profile.mixed_share or 0.0,
        "sentiment_score": profile.sentiment_score,
        "rating_mean": profile.rating_mean,
        "behavior_counts": {
            a: profile.behavior_counts[a] for a in BEHAVIOR_ACTIONS if a in profile.behavior_counts
        },  # fmt: skip
        "top_interests": [
            (name, stats.activity * factor, stats.sentiment_score)
            for name, stats in profile.interests()[:top]
        ],
        "last_event": None if ref is None else datetime.fromtimestamp(ref / 1000, tz=UTC),
    }
