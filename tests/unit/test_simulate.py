"""The demo population (stream/tools/simulate.py): deterministic, truthful shares, skewed
activity."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pytest

from stream.events import BehaviorEvent, CommentEvent
from stream.tools.fidelity import profile_fidelity
from stream.tools.simulate import LABELS, Population, simulate


@dataclass(frozen=True)
class Text:
    text: str
    label: str
    lang: str = "en"


TEXTS = [Text(f"{label} text number {i}", label) for label in LABELS for i in range(400)]


@pytest.fixture(scope="module")
def population() -> Population:
    return simulate(TEXTS, users=100, seed=3)


def _comments(population: Population) -> list[dict]:
    return [e for e in population.events if "action" not in e]


def test_same_seed_same_population_other_seed_differs(population: Population) -> None:
    again = simulate(TEXTS, users=100, seed=3)
    other = simulate(TEXTS, users=100, seed=4)

    assert again.events == population.events
    assert again.true_shares == population.true_shares
    assert other.events != population.events


def test_true_shares_sum_to_one_and_match_written_texts(population: Population) -> None:
    label_of = {t.text: t.label for t in TEXTS}
    written: dict[str, Counter[str]] = {}
    for event in _comments(population):
        written.setdefault(event["user_id"], Counter())[label_of[event["text"]]] += 1

    for user, shares in population.true_shares.items():
        assert sum(shares.values()) == pytest.approx(1.0)
        total = population.comment_counts[user]
        assert shares == {lb: written[user][lb] / total for lb in LABELS}


def test_texts_are_never_reused_and_every_user_writes(population: Population) -> None:
    texts = [e["text"] for e in _comments(population)]

    assert len(texts) == len(set(texts)) == population.comment_total == 600
    assert min(population.comment_counts.values()) >= 1


def test_activity_is_zipf_like(population: Population) -> None:
    counts = sorted(population.comment_counts.values(), reverse=True)

    top_decile_share = sum(counts[:10]) / sum(counts)
    assert top_decile_share > 0.3
    assert counts[0] >= 5 * counts[len(counts) // 2]


def test_every_event_matches_its_schema(population: Population) -> None:
    actions = Counter()
    for event in population.events:
        if "action" in event:
            actions[BehaviorEvent.model_validate(event).action] += 1
        else:
            CommentEvent.model_validate(event)
    assert {"view", "click", "cart", "purchase", "like"} <= set(actions)
    assert len({e["event_id"] for e in population.events}) == len(population.events)


def test_some_events_arrive_out_of_event_time_order(population: Population) -> None:
    times = [
        (BehaviorEvent if "action" in e else CommentEvent).model_validate(e).event_time
        for e in population.events
    ]

    late = sum(1 for a, b in zip(times, times[1:], strict=False) if b < a)
    assert 0 < late < len(times) * 0.2


def test_fidelity_of_perfect_profiles_is_zero(population: Population) -> None:
    profiles = {
        user: {"label_counts": {lb: round(share * population.comment_counts[user])
                                for lb, share in shares.items()}}
        for user, shares in population.true_shares.items()
    }  # fmt: skip

    fidelity = profile_fidelity(population, profiles, min_comments=5)

    assert fidelity.users == sum(1 for n in population.comment_counts.values() if n >= 5) > 0
    assert fidelity.mean_absolute_error == pytest.approx(0.0, abs=1e-9)
    assert fidelity.baseline_mae > 0.05


def test_fidelity_without_profiles_reports_no_users(population: Population) -> None:
    fidelity = profile_fidelity(population, {})

    assert fidelity.users == 0


def test_too_few_texts_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="one labelled text per user"):
        simulate(TEXTS[:5], users=10)


def test_users_write_in_one_language_drawn_by_share() -> None:
    zh = [
        Text(f"{label}评论{i}", label, "zh")
        for label in ("negative", "positive")
        for i in range(300)
    ]
    population = simulate([*TEXTS, *zh], users=200, seed=3, language_shares={"en": 0.7, "zh": 0.3})
    by_user: dict[str, set[str]] = {}
    for event in _comments(population):
        by_user.setdefault(event["user_id"], set()).add(event["lang"])
    assert all(len(langs) == 1 for langs in by_user.values())  # one language per user
    assert {u: langs.pop() for u, langs in by_user.items()} == population.user_language
    share = sum(lang == "zh" for lang in population.user_language.values()) / len(by_user)
    assert 0.2 < share < 0.4
    profiles = {u: {"label_counts": {"positive": 1}} for u in population.user_language}
    per_language = [profile_fidelity(population, profiles, min_comments=1, language=lang)
                    for lang in ("en", "zh")]  # fmt: skip
    assert (
        sum(f.users for f in per_language)
        == profile_fidelity(population, profiles, min_comments=1).users
    )
    with pytest.raises(ValueError, match="no labelled text"):
        simulate(TEXTS, users=10, language_shares={"en": 0.5, "zh": 0.5})
