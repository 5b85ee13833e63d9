"""What the profile page and its JSON API show for one user (:func:`build_view`).

Everything comes from the user's latest ``profile-updates.v1`` value, except the comment texts,
read back from their source records (:mod:`stream.tools.page.records`). A mixed comment's clauses
are cut again from that text with the worker's own rule
(:func:`models.contract.mixed.split_clauses`) and paired with the labels the worker kept for them
(``RecentComment.clause_labels``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from models.contract.labels import LABELS
from models.contract.mixed import split_clauses
from stream.tools.page.records import CommentRecord

__all__ = ["build_view", "text_pieces"]


def _iso_ms(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def text_pieces(text: str, clauses: Sequence[str], labels: Sequence[str]) -> list[dict[str, Any]]:
    """``text`` cut into pieces, each clause with its label and the text between with none.

    Args:
        text: The comment.
        clauses: Its clauses in text order (contiguous pieces of ``text``).
        labels: One label per clause (``""``: not classified).

    Returns:
        ``[{"text": str, "label": str | None}]`` whose texts join back to ``text``.
    """
    pieces: list[dict[str, Any]] = []
    at = 0
    for clause, label in zip(clauses, labels, strict=True):
        start = text.find(clause, at)
        if start < 0:
            break
        if start > at:
            pieces.append({"text": text[at:start], "label": None})
        pieces.append({"text": clause, "label": label or None})
        at = start + len(clause)
    if at < len(text):
        pieces.append({"text": text[at:], "label": None})
    return pieces


def _comment(comment: dict[str, Any], record: CommentRecord, max_clauses: int) -> dict[str, Any]:
    probabilities = dict(zip(LABELS, comment["probabilities"], strict=True))
    labels = list(comment.get("clause_labels") or [])
    pieces = None
    if record.text is not None and labels:
        clauses = split_clauses(record.text, max_clauses=max_clauses)
        if len(clauses) == len(labels):
            pieces = text_pieces(record.text, clauses, labels)
    return {
        "event_id": comment["event_id"], "event_time": _iso_ms(comment["event_time_ms"]),
        "label": comment["label"], "probabilities": probabilities, "mixed": comment["mixed"],
        "model_version": comment.get("model_version"), "source": comment.get("source"),
        "text": record.text, "lang": record.lang, "gone": record.gone,
        "clause_labels": labels, "pieces": pieces,
    }  # fmt: skip


def _daily(profile: dict[str, Any]) -> list[dict[str, Any]]:
    days = []
    for day in profile.get("daily") or []:
        comments = day["comments"]
        score = (day["positive"] - day["negative"]) / comments if comments else None
        when = datetime.fromtimestamp(day["day_ms"] / 1000, UTC).date().isoformat()
        days.append({"day": when, "comments": comments, "events": day["events"], "score": score})
    return days


def build_view(
    update: dict[str, Any], records: Sequence[CommentRecord], *, max_clauses: int
) -> dict[str, Any]:
    """The page's data for one user.

    Args:
        update: The user's latest ``profile-updates.v1`` value (as a dict).
        records: One :class:`CommentRecord` per ``profile["recent_comments"]``, in that order.
        max_clauses: ``PORTRAIT_MIXED__MAX_CLAUSES`` (how the worker cut the clauses).

    Returns:
        A JSON-ready dict: ``user_id``, ``version``, ``updated_at``, ``model_version``,
        ``sentiment_score`` (in [-1, 1] or null), ``comment_count``, ``label_shares`` (share of
        comments per label), ``mixed_share``, ``interests``, ``behavior_counts``,
        ``purchase_value_sum``, ``segments`` (names), ``daily`` (``day``, ``comments``,
        ``events``, ``score`` = (positive - negative) / comments), ``recent_comments`` (newest
        first: verdict, probabilities, model version, time, text or why it is ``gone``, and for a
        mixed comment its ``pieces``: the text cut into clauses with their labels).

    Raises:
        ValueError: ``records`` does not match the recent comments.
    """
    profile = update["profile"]
    recent = profile.get("recent_comments") or []
    if len(records) != len(recent):
        raise ValueError(f"{len(records)} records for {len(recent)} recent comments")
    count = profile.get("comment_count", 0)
    shares = {label: (profile["label_counts"][label] / count if count else None)
              for label in LABELS}  # fmt: skip
    comments = [_comment(c, r, max_clauses) for c, r in zip(recent, records, strict=True)]
    return {
        "user_id": update["user_id"], "version": update["version"],
        "updated_at": update.get("updated_at"), "model_version": update.get("model_version"),
        "sentiment_score": profile.get("sentiment_score"), "comment_count": count,
        "label_shares": shares, "mixed_share": profile.get("mixed_share"),
        "interests": profile.get("interests") or [],
        "behavior_counts": profile.get("behavior_counts") or {},
        "purchase_value_sum": profile.get("purchase_value_sum", 0.0),
        "segments": sorted(profile.get("segments") or {}),
        "daily": _daily(profile),
        "recent_comments": comments[::-1],
    }  # fmt: skip
