"""``labels.v1``: corrections of the classifier's verdicts, made by people on the profile page.

A correction names the comment (its event id and the ``topic:partition:offset`` of its record),
the label the model gave and the one a person says is right, and the model version that was
wrong. It carries the comment's text and language too: retraining needs them, and the source
topic may have dropped the record by then (retention).

Key = user id (the pseudonymised one when pseudonymisation is on), so an erasure reaches it: the
worker writes a tombstone (null value) for the user on ``labels.v1`` with the one on
``profile-updates.v1``. The topic is not compacted (compaction would keep only a user's last
correction); a tombstone hides the user's earlier corrections from every reader at once
(:func:`live_corrections`), and the broker drops the records at the end of their retention.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from stream.event_time import EventTime

__all__ = ["Correction", "LABELS_CONFIG", "corrected_at_now", "live_corrections", "training_rows"]

LABELS_CONFIG = {"cleanup.policy": "delete"}
"""Topic configs of ``labels.v1`` when Portrait creates it: kept for the broker's retention,
not compacted (see the module docstring)."""

Label = Literal["negative", "neutral", "positive"]


class Correction(BaseModel):
    """A ``labels.v1`` value: a person's correction of one verdict.

    Attributes:
        correction_id: Unique id of the correction (a UUID4 hex string).
        user_id: The user whose comment it is (as keyed on ``profile-updates.v1``).
        event_id: The comment's event id.
        source: ``topic:partition:offset`` of the comment's record.
        text: The comment's text, as read back from ``source``.
        lang: Language tag of the comment when the producer gave one (``zh``, ``en``...).
        predicted_label: The label the model gave (arg-max of ``probabilities``).
        probabilities: The model's ``(p_negative, p_neutral, p_positive)`` for the comment.
        corrected_label: The label the person says is right.
        model_version: ``model_version`` of the model that gave ``predicted_label``.
        corrected_at: When the correction was made, UTC.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    correction_id: str = Field(min_length=1, max_length=64)
    user_id: str = Field(min_length=1, max_length=128)
    event_id: str = Field(min_length=1, max_length=256)
    source: str | None = Field(default=None, max_length=512)
    text: str
    lang: str | None = Field(default=None, max_length=35)
    predicted_label: Label
    probabilities: tuple[float, float, float]
    corrected_label: Label
    model_version: str | None
    corrected_at: EventTime

    def to_json_bytes(self) -> bytes:
        """The correction as UTF-8 JSON (``corrected_at`` as RFC 3339)."""
        return self.model_dump_json().encode("utf-8")


def live_corrections(records: Iterable[tuple[bytes | None, bytes | None]]) -> list[Correction]:
    """The corrections a reader may use, from ``labels.v1`` records in offset order.

    Args:
        records: ``(key, value)`` of every record of the topic, each partition in offset order
            (the partitions may be interleaved: a user's records are all in one partition).

    Returns:
        The corrections that no later tombstone of their user erased, the last one per
        ``(user_id, event_id)`` (a person may change their mind), in the order read. A value
        that is not a valid correction is skipped.
    """
    latest: dict[tuple[str, str], Correction] = {}
    for key, value in records:
        if value is None:  # an erasure: the user's corrections so far are gone
            user = (key or b"").decode("utf-8", "replace")
            latest = {k: c for k, c in latest.items() if k[0] != user}
            continue
        try:
            correction = Correction.model_validate_json(value)
        except ValueError:
            continue
        where = (correction.user_id, correction.event_id)
        latest.pop(where, None)
        latest[where] = correction
    return list(latest.values())


def training_rows(
    corrections: Iterable[Correction], *, weight: float = 1.0
) -> list[dict[str, Any]]:
    """Rows of a JSONL training file that ``portrait train --data`` reads
    (:func:`models.data.load_table`): ``text``, ``label`` (the corrected one), ``confidence`` =
    ``weight`` (``portrait train`` weights each row's loss by it), ``lang`` when known, and
    where the row came from (``event_id``, ``model_version``, ``predicted_label``)."""
    rows = []
    for c in corrections:
        row: dict[str, Any] = {"text": c.text, "label": c.corrected_label, "confidence": weight}
        if c.lang:
            row["lang"] = c.lang
        row.update(event_id=c.event_id, model_version=c.model_version,
                   predicted_label=c.predicted_label)  # fmt: skip
        rows.append(row)
    return rows


def corrected_at_now() -> datetime:
    """The current UTC time (what ``corrected_at`` is set to)."""
    return datetime.now(UTC)
