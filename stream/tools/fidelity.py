"""Profile fidelity: how well the profiles of a simulated population recover its true label shares.

The ground truth is :class:`stream.tools.simulate.Population` (each user's hidden label shares);
``portrait demo`` reports the figure for all users and per language.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.contract.labels import LABELS
from stream.tools.simulate import Population

__all__ = ["Fidelity", "profile_fidelity"]


@dataclass(frozen=True)
class Fidelity:
    """How well profiles recover the users' true label shares.

    Attributes:
        users: users compared (those with at least ``min_comments`` comments and a profile).
        mean_absolute_error: mean over users and labels of ``|true share - profile share|``.
        per_label_mae: the same, per label.
        baseline_mae: the error of guessing the population's overall true shares for every user
            (a reference point: a useful profile is well below it).
        min_comments: the threshold used.
    """

    users: int
    mean_absolute_error: float
    per_label_mae: dict[str, float]
    baseline_mae: float
    min_comments: int


def profile_fidelity(
    population: Population,
    profiles: Mapping[str, Mapping[str, Any]],
    *,
    min_comments: int = 5,
    language: str | None = None,
) -> Fidelity:
    """Compare true label shares with profile label shares (``label_counts`` / comment total).

    Args:
        population: the simulated population (ground truth).
        profiles: user id -> profile dict (``Profile.to_dict()``: ``label_counts``).
        min_comments: only users with at least this many comments are compared.
        language: only users writing in this language (``Population.user_language``); ``None``
            = every user. The reference shares are those of the same users.

    Returns:
        The :class:`Fidelity`; with no comparable user, errors are NaN and ``users`` is 0.
    """
    members = [uid for uid in population.comment_counts
               if language is None or population.user_language.get(uid) == language]  # fmt: skip
    compared = [uid for uid in members
                if population.comment_counts[uid] >= min_comments and uid in profiles]  # fmt: skip
    if not compared:
        nan = float("nan")
        return Fidelity(0, nan, dict.fromkeys(LABELS, nan), nan, min_comments)
    truth = np.array([[population.true_shares[u][lb] for lb in LABELS] for u in compared])
    counts = np.array([[float(profiles[u]["label_counts"].get(lb, 0)) for lb in LABELS]
                       for u in compared])  # fmt: skip
    predicted = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
    errors = np.abs(truth - predicted)
    overall = np.array([sum(population.true_shares[u][lb] * population.comment_counts[u]
                            for u in members) for lb in LABELS])  # fmt: skip
    overall /= overall.sum()
    return Fidelity(
        users=len(compared),
        mean_absolute_error=float(errors.mean()),
        per_label_mae={lb: float(errors[:, i].mean()) for i, lb in enumerate(LABELS)},
        baseline_mae=float(np.abs(truth - overall).mean()),
        min_comments=min_comments,
    )
