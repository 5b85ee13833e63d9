"""Profile aggregation: every figure against a hand-computed value; order, idempotence, bounds.

The hand computations use a half-life of one hour, so the decay weights are exact powers of two.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from stream.aggregate import apply_behavior, apply_comment, duplicate_reason, summary
from stream.events import BehaviorEvent, CommentEvent
from stream.profile import EVENT_ID_WINDOW, SCHEMA_VERSION, Profile, ScoredComment, decay_weight
from stream.settings import ProfileSettings

T0 = datetime(2024, 5, 1, tzinfo=UTC)
HOUR = ProfileSettings(half_life_s=3600.0, top_k_categories=20, last_n_comments=2)


def comment(
    event_id: str, hours: float, probs: tuple[float, float, float], category: str | None = None,
    rating: float | None = None,
) -> ScoredComment:  # fmt: skip
    event = CommentEvent(
        event_id=event_id, user_id="u", text="never stored", category=category, rating=rating,
        event_time=T0 + timedelta(hours=hours),
    )  # fmt: skip
    return ScoredComment(event, probs)


def behavior(
    event_id: str,
    hours: float,
    action: str,
    category: str | None = None,
    value: float | None = None,
) -> BehaviorEvent:
    return BehaviorEvent.model_validate({
        "event_id": event_id, "user_id": "u", "action": action, "category": category,
        "value": value, "event_time": T0 + timedelta(hours=hours),
    })  # fmt: skip


Item = ScoredComment | BehaviorEvent


def apply_all(items: list[Item], settings: ProfileSettings = HOUR) -> Profile:
    """Apply in list order; offsets count up per topic in arrival order, as Kafka delivers them."""
    profile = Profile(user_id="u")
    offsets = {"comments.v1": 0, "behavior.v1": 0}
    for item in items:
        if isinstance(item, ScoredComment):
            offset = offsets["comments.v1"]
            assert apply_comment(profile, item, topic="comments.v1", partition=0, offset=offset,
                                 settings=settings)  # fmt: skip
            offsets["comments.v1"] += 1
        else:
            offset = offsets["behavior.v1"]
            assert apply_behavior(profile, item, topic="behavior.v1", partition=0, offset=offset,
                                  settings=settings)  # fmt: skip
            offsets["behavior.v1"] += 1
    return profile


# c1 at 0 h: s = 0.25 - 0.5 = -0.25 (negative); c2 at 1 h: s = 0.75 - 0.125 = 0.625 (positive);
# c3 at 2 h: s = 0 (neutral).
C1 = comment("c1", 0, (0.5, 0.25, 0.25), "books", rating=5)
C2 = comment("c2", 1, (0.125, 0.125, 0.75), "books", rating=3)
C3 = comment("c3", 2, (0.25, 0.5, 0.25), "toys")
# b1 at 3 h moves t_ref to 3 h; b2 at 1 h arrives late.
B1 = behavior("b1", 3, "view", "books")
B2 = behavior("b2", 1, "purchase", "games", value=10.0)


def test_comment_figures_hand_computed() -> None:
    p = apply_all([C1, C2, C3])
    # t_ref = 2 h; weights 2**-2, 2**-1, 1
    assert p.comment_count == 3
    assert p.label_counts == {"negative": 1, "neutral": 1, "positive": 1}
    assert p.mean_probabilities == pytest.approx(
        {"negative": 0.875 / 3, "neutral": 0.875 / 3, "positive": 1.25 / 3}, abs=1e-15
    )
    # (0.25 * -0.25 + 0.5 * 0.625 + 1 * 0) / (0.25 + 0.5 + 1) = 0.25 / 1.75
    assert p.sentiment_score == pytest.approx(1 / 7, abs=1e-15)
    assert p.sentiment_weight_sum == pytest.approx(1.75, abs=1e-15)
    assert p.rating_count == 2 and p.rating_mean == 4.0
    books, toys = p.categories["books"], p.categories["toys"]
    assert books.activity == pytest.approx(0.75, abs=1e-15)
    assert books.sentiment_score == pytest.approx(0.25 / 0.75, abs=1e-15)  # 1/3
    assert toys.activity == 1.0 and toys.sentiment_score == 0.0
    assert p.first_event_time_ms == int(T0.timestamp() * 1000)
    assert p.last_event_time_ms == int((T0 + timedelta(hours=2)).timestamp() * 1000)
    assert p.hour_histogram[:4] == [1, 1, 1, 0] and sum(p.hour_histogram) == 3
    assert [c.event_id for c in p.recent_comments] == ["c2", "c3"]  # last N = 2
    assert p.recent_comments[0].label == "positive"
    assert p.recent_comments[0].probabilities == (0.125, 0.125, 0.75)
    assert p.version == 3


def test_behavior_figures_hand_computed() -> None:
    p = apply_all([C1, C2, C3, B1, B2])
    # t_ref = 3 h: comment weights 1/8, 1/4, 1/2; b1 weight 1; b2 (1 h) weight 1/4
    assert p.behavior_counts == {"view": 1, "purchase": 1}
    assert p.purchase_value_sum == 10.0
    assert p.sentiment_score == pytest.approx(1 / 7, abs=1e-15)  # a ratio: unchanged by t_ref
    assert p.categories["books"].activity == pytest.approx(0.125 + 0.25 + 1.0, abs=1e-15)
    assert p.categories["toys"].activity == pytest.approx(0.5, abs=1e-15)
    assert p.categories["games"].activity == pytest.approx(0.25, abs=1e-15)
    assert p.categories["games"].sentiment_score is None  # no comments in games
    assert [name for name, _ in p.interests()] == ["books", "toys", "games"]
    assert p.hour_histogram[:4] == [1, 2, 1, 1]
    assert p.last_event_time_ms == int((T0 + timedelta(hours=3)).timestamp() * 1000)
    assert p.version == 5


def test_purchase_value_only_from_purchases() -> None:
    p = apply_all([behavior("x", 0, "cart", value=99.0), behavior("y", 0, "purchase"),
                   behavior("z", 1, "purchase", value=2.5)])  # fmt: skip
    assert p.purchase_value_sum == 2.5
    assert p.behavior_counts == {"cart": 1, "purchase": 2}


def test_decay_weight_values() -> None:
    assert decay_weight(0, 0, 10.0) == 1.0
    assert decay_weight(0, 10_000, 10.0) == 0.5
    assert decay_weight(0, 30_000, 10.0) == 0.125
    assert decay_weight(0, 7 * 24 * 3600 * 1000, 604800.0) == 0.5  # the default: 7 days


def _assert_same(a: Any, b: Any, path: str = "") -> None:
    """Deep equality with floats compared to 1e-12 (relative)."""
    if isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-12, abs=1e-15), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            _assert_same(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


def _content(profile: Profile) -> dict[str, Any]:
    """The profile without the records' positions: a recent comment's ``source`` names the offset
    it arrived at, which here is its place in the arrival order."""
    data = profile.to_dict()
    for comment in data["recent_comments"]:
        del comment["source"]
    return data


def test_every_arrival_order_gives_the_same_profile() -> None:
    reference = _content(apply_all([C1, C2, C3, B2, B1]))  # event-time order
    for order in itertools.permutations([C1, C2, C3, B1, B2]):
        _assert_same(_content(apply_all(list(order))), reference)


def test_random_stream_shuffled_equals_in_order_and_direct_formula() -> None:
    rng = random.Random(7)
    items: list[ScoredComment] = []
    for i in range(300):
        a, b = rng.random(), rng.random()
        lo, hi = min(a, b), max(a, b)
        probs = (lo, hi - lo, 1.0 - hi)
        items.append(comment(f"c{i}", rng.uniform(0, 72), probs, f"cat{i % 5}"))
    in_order = apply_all(sorted(items, key=lambda s: s.event.event_time))
    shuffled = items[:]
    rng.shuffle(shuffled)
    _assert_same(_content(apply_all(shuffled)), _content(in_order))
    # the definition, computed directly: weights relative to the latest event time
    t_ref = max(s.event.event_time_ms for s in items)
    w = [2.0 ** ((s.event.event_time_ms - t_ref) / 1000 / 3600) for s in items]
    direct = sum(
        wi * (s.probabilities[2] - s.probabilities[0]) for wi, s in zip(w, items, strict=True)
    )
    assert in_order.sentiment_score == pytest.approx(direct / sum(w), rel=1e-12)
    cat0 = sum(wi for wi, s in zip(w, items, strict=True) if s.event.category == "cat0")
    assert in_order.categories["cat0"].activity == pytest.approx(cat0, rel=1e-12)


def test_reapplying_an_offset_is_a_no_op() -> None:
    p = Profile(user_id="u")
    assert apply_comment(p, C1, topic="comments.v1", partition=2, offset=10, settings=HOUR)
    before = json.dumps(p.to_dict(), sort_keys=True)
    assert not apply_comment(p, C1, topic="comments.v1", partition=2, offset=10, settings=HOUR)
    assert not apply_comment(p, C2, topic="comments.v1", partition=2, offset=9, settings=HOUR)
    assert json.dumps(p.to_dict(), sort_keys=True) == before
    assert p.version == 1 and p.applied_offsets == {"comments.v1:2": 10}


def test_offsets_are_tracked_per_topic_and_partition() -> None:
    p = Profile(user_id="u")
    assert apply_comment(p, C1, topic="comments.v1", partition=0, offset=5, settings=HOUR)
    assert apply_comment(p, C2, topic="comments.v1", partition=1, offset=5, settings=HOUR)
    assert apply_behavior(p, B1, topic="behavior.v1", partition=0, offset=5, settings=HOUR)
    assert not apply_behavior(p, B2, topic="behavior.v1", partition=0, offset=3, settings=HOUR)
    assert p.applied_offsets == {"comments.v1:0": 5, "comments.v1:1": 5, "behavior.v1:0": 5}
    assert p.version == 3


def test_redelivered_batch_after_restart_counts_once() -> None:
    stored = apply_all([C1, C2]).to_dict()  # state as written to the table before a crash
    restarted = Profile.from_dict(json.loads(json.dumps(stored)))
    for offset, item in enumerate([C1, C2, C3]):  # the consumer resumes from an older commit
        apply_comment(
            restarted, item, topic="comments.v1", partition=0, offset=offset, settings=HOUR
        )
    _assert_same(restarted.to_dict(), apply_all([C1, C2, C3]).to_dict())


def test_top_k_evicts_lowest_activity() -> None:
    settings = ProfileSettings(half_life_s=3600.0, top_k_categories=2, last_n_comments=2)
    p = apply_all([C1, C2, C3, B1, B2], settings)
    # activities at t_ref = 3 h: books 1.375, toys 0.5, games 0.25 -> games evicted
    assert set(p.categories) == {"books", "toys"}
    assert [entry["category"] for entry in p.to_dict()["interests"]] == ["books", "toys"]


def test_top_k_tie_evicts_by_name() -> None:
    settings = ProfileSettings(half_life_s=3600.0, top_k_categories=2)
    p = apply_all([behavior("1", 0, "view", "b"), behavior("2", 0, "view", "a"),
                   behavior("3", 0, "view", "c")], settings)  # fmt: skip
    assert set(p.categories) == {"b", "c"}  # equal activity 1.0: "a" goes first


def test_last_n_ordered_by_event_time_whatever_the_arrival() -> None:
    settings = ProfileSettings(half_life_s=3600.0, last_n_comments=3)
    items = [comment(f"c{h}", h, (0.2, 0.3, 0.5)) for h in (5, 1, 4, 2, 3, 0)]
    p = apply_all(list(items), settings)
    assert [c.event_id for c in p.recent_comments] == ["c3", "c4", "c5"]
    assert [c.event_time_ms for c in p.recent_comments] == sorted(
        c.event_time_ms for c in p.recent_comments
    )


def test_last_n_zero_keeps_nothing() -> None:
    p = apply_all([C1], ProfileSettings(last_n_comments=0))
    assert p.recent_comments == []


def test_no_text_in_the_profile() -> None:
    assert "never stored" not in json.dumps(apply_all([C1, C2, C3]).to_dict())


def test_size_stays_bounded_after_10000_events() -> None:
    rng = random.Random(3)
    settings = ProfileSettings(half_life_s=86400.0, top_k_categories=20, last_n_comments=5)
    p = Profile(user_id="u")
    sizes = []
    for i in range(10_000):
        event = CommentEvent(
            event_id=f"e{i}", user_id="u", text="", category=f"category-{rng.randrange(1000)}",
            rating=rng.choice([None, 1, 5]), event_time=T0 + timedelta(seconds=rng.uniform(0, 9e6)),
        )  # fmt: skip
        apply_comment(p, ScoredComment(event, (0.2, 0.3, 0.5)), topic="comments.v1", partition=0,
                      offset=i, settings=settings)  # fmt: skip
        if i in (999, 9_999):
            sizes.append(len(json.dumps(p.to_dict())))
    assert len(p.categories) == 20 and len(p.recent_comments) == 5 and len(p.daily) <= 30
    assert p.comment_count == 10_000 and p.version == 10_000
    assert sizes[1] < 16_000 and sizes[1] < sizes[0] * 1.1  # 30 day buckets: about 4 kB


def test_dict_round_trip_through_json() -> None:
    p = apply_all([C1, C2, C3, B1, B2])
    data = json.loads(json.dumps(p.to_dict()))
    assert data["schema"] == SCHEMA_VERSION
    assert data["sentiment_score"] == pytest.approx(1 / 7)
    restored = Profile.from_dict(data)
    assert restored == p
    assert restored.to_dict() == p.to_dict()


@pytest.mark.parametrize(
    "change",
    [{"schema": 99}, {"version": "many"}, {"hour_histogram": [0] * 23}, {"label_counts": {"x": 1}}],
)
def test_from_dict_rejects_malformed(change: dict[str, Any]) -> None:
    data = {**apply_all([C1]).to_dict(), **change}
    with pytest.raises(ValueError):
        Profile.from_dict(data)


def test_empty_profile_figures() -> None:
    p = Profile(user_id="u")
    assert p.mean_probabilities is None and p.sentiment_score is None and p.rating_mean is None
    assert Profile.from_dict(p.to_dict()) == p


@pytest.mark.parametrize(
    "probs",
    [(0.5, 0.5), (0.5, 0.5, 0.5), (math.nan, 0.5, 0.5), (-0.1, 0.6, 0.5), (1.5, -0.25, -0.25)],
)
def test_scored_comment_rejects_bad_probabilities(probs: tuple[float, ...]) -> None:
    with pytest.raises(ValueError):
        ScoredComment(C1.event, probs)  # type: ignore[arg-type]


def test_scored_comment_label_and_sentiment() -> None:
    assert ScoredComment(C1.event, (0.4, 0.4, 0.2)).label == "negative"  # tie: the first
    assert ScoredComment(C1.event, (0.1, 0.2, 0.7)).sentiment == pytest.approx(0.6)


def test_summary_decays_activity_to_now() -> None:
    p = apply_all([C1, C2, C3])  # t_ref = 2 h; books 0.75, toys 1.0
    view = summary(p, T0 + timedelta(hours=4), top=1)
    assert view["comments"] == 3
    assert view["label_shares"] == {"negative": 1 / 3, "neutral": 1 / 3, "positive": 1 / 3}
    assert view["top_interests"] == [("toys", 0.25, 0.0)]  # 1.0 * 2**-2
    assert view["last_event"] == T0 + timedelta(hours=2)


def test_mixed_share_and_category_counts() -> None:
    mixed = comment("m1", 3, (0.125, 0.125, 0.75), "books")
    mixed = ScoredComment(mixed.event, mixed.probabilities, mixed=True)
    p = apply_all([C1, C2, C3, mixed])
    assert p.mixed_count == 1 and p.mixed_share == 0.25
    books, toys = p.categories["books"], p.categories["toys"]
    # by the whole-comment label: C1 negative, C2 positive, the mixed one positive; C3 neutral
    assert (books.positive_count, books.negative_count) == (2, 1)
    assert (toys.positive_count, toys.negative_count) == (0, 0)
    assert [c.mixed for c in p.recent_comments] == [False, True]
    data = p.to_dict()
    assert data["mixed_count"] == 1 and data["mixed_share"] == 0.25
    assert data["interests"][0] == {
        "category": "books", "activity": books.activity, "sentiment_score": books.sentiment_score,
        "positive_count": 2, "negative_count": 1,
    }  # fmt: skip
    assert summary(p, T0 + timedelta(hours=3))["mixed_share"] == 0.25
    assert Profile.from_dict(json.loads(json.dumps(data))) == p


def test_mixed_share_without_comments() -> None:
    p = apply_all([B1])
    assert p.mixed_share is None and p.to_dict()["mixed_share"] is None
    assert summary(p, T0)["mixed_share"] == 0.0


def test_state_written_before_mixed_counts_loads_with_zeros() -> None:
    p = apply_all([C1, C2, C3])
    old = json.loads(json.dumps(p.to_dict()))
    del old["mixed_count"], old["mixed_share"]
    for stats in old["categories"].values():
        del stats["positive_count"], stats["negative_count"]
    for recent in old["recent_comments"]:
        del recent["mixed"]
    restored = Profile.from_dict(old)
    assert restored.mixed_count == 0
    assert all(s.positive_count == s.negative_count == 0 for s in restored.categories.values())
    assert not any(c.mixed for c in restored.recent_comments)
    fresh = C1.event.model_copy(update={"event_id": "c1-later"})  # a new event: not a resend
    apply_comment(restored, ScoredComment(fresh, (0.1, 0.1, 0.8), mixed=True),
                  topic="comments.v1", partition=0, offset=99, settings=HOUR)  # fmt: skip
    assert restored.mixed_count == 1 and restored.categories["books"].positive_count == 1


def test_a_resent_event_id_at_a_new_offset_is_a_duplicate_and_its_offset_is_done() -> None:
    p = apply_all([C1, C2])
    before = p.to_dict()
    resent = ScoredComment(C1.event, (0.9, 0.05, 0.05))  # same event_id, other verdict
    assert duplicate_reason(p, "c1", "comments.v1", 0, 7) == "event_id"
    assert not apply_comment(p, resent, topic="comments.v1", partition=0, offset=7, settings=HOUR)
    after = p.to_dict()
    assert after["applied_offsets"] == {"comments.v1:0": 7}  # the offset is done all the same
    del before["applied_offsets"], after["applied_offsets"]
    assert after == before  # nothing else changed: no count, no score, no version
    assert duplicate_reason(p, "c1", "comments.v1", 0, 7) == "offset"


def test_the_event_id_window_keeps_the_latest_events_by_event_time() -> None:
    p = Profile(user_id="u")
    items = [comment(f"e{i}", float(i), (0.2, 0.3, 0.5)) for i in range(EVENT_ID_WINDOW + 8)]
    for offset, item in enumerate(reversed(items)):  # arrival order: newest first
        apply_comment(p, item, topic="comments.v1", partition=0, offset=offset, settings=HOUR)
    assert list(p.recent_event_ids) == [f"e{i}" for i in range(8, EVENT_ID_WINDOW + 8)]
    assert len(json.dumps(p.to_dict()["recent_event_ids"])) < 2000  # bounded
