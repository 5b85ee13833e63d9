"""Corrections in training and evaluation: people's fixes, with a held-out part kept apart.

A correction is a live comment whose verdict someone fixed on the profile page; ``portrait labels
export`` writes them as a JSONL table (:func:`models.data.load_table` columns: ``text``,
``label``, ``lang``, ``confidence`` = the export's ``--weight``). ``portrait train --corrections``
joins them to the base data and ``portrait evaluate --corrections`` scores the held-out part, so
that a retrained model and the live one are compared on the same rows:

- texts are cleaned like any dataset's; of several corrections of one text the **last** wins (a
  person corrected it again), unlike :func:`models.data.clean`, which drops a text whose labels
  conflict;
- a correction of a text in the base data's validation or test part is left out (counted as
  ``in_fixed_split``): the fixed test split stays exactly the rows every model was measured on;
- a correction of a text in the base training part replaces that row (the correction is the newer
  judgement; without this rule :func:`models.data.clean` would drop both as conflicting);
- the held-out part is a stratified (language, label), seeded sample of ``holdout`` of the rest
  (:func:`models.data.stratified`, the same ordering as the base split), so training and
  evaluation pick the same rows from the same file and seed; training writes their hashes to
  ``corrections-test.sha256.txt`` beside the checkpoint and evaluation checks them.

A correction's loss weight in training is its ``confidence`` (the export's ``--weight``), the same
per-row weighting the bundled datasets' annotator agreement gets (:class:`models.train.TrainConfig`
``use_confidence``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from models.data import (
    LabelledComment,
    Split,
    check_split_hashes,
    clean_text,
    load_table,
    stratified,
)

__all__ = [
    "CORRECTIONS_HOLDOUT",
    "HELD_OUT_HASHES",
    "CorrectionsSplit",
    "check_held_out",
    "load_corrections",
    "split_corrections",
]

CORRECTIONS_HOLDOUT = 0.2
"""Default share of the corrections held out of training, per (language, label) group."""

HELD_OUT_HASHES = "corrections-test.sha256.txt"
"""File, beside a trained checkpoint, of the SHA-256 of each held-out correction's text."""


@dataclass(frozen=True, slots=True)
class CorrectionsSplit:
    """Corrections cut for one base split.

    Attributes:
        split: the base split with the training corrections joined to its training part (and the
            base training rows they correct removed); validation and test parts unchanged.
        held_out: corrections kept out of training, for evaluation.
        trained: corrections joined to the training part.
        in_fixed_split: corrections left out because their text is in the base validation or
            test part.
        replaced: base training rows replaced by a correction of the same text.
    """

    split: Split
    held_out: list[LabelledComment]
    trained: list[LabelledComment]
    in_fixed_split: int
    replaced: int

    def record(self) -> dict[str, int]:
        """Counts for ``training.json`` and the evaluation report."""
        return {
            "trained": len(self.trained),
            "held_out": len(self.held_out),
            "in_fixed_split": self.in_fixed_split,
            "replaced_base_rows": self.replaced,
        }


def load_corrections(path: Path | str) -> list[LabelledComment]:
    """Read a corrections table (``portrait labels export``); the last correction of a text wins.

    Returns:
        One row per cleaned, non-empty text, in order of each text's first appearance.

    Raises:
        DataError: the file is missing, not a table, or a row has no text or an unknown label.
    """
    last: dict[str, LabelledComment] = {}
    for row in load_table(path):
        text = clean_text(row.text)
        if text:
            last[text] = LabelledComment(text, row.label, row.lang, row.source, row.confidence)
    return list(last.values())


def split_corrections(
    corrections: list[LabelledComment],
    base: Split,
    *,
    seed: int,
    holdout: float = CORRECTIONS_HOLDOUT,
) -> CorrectionsSplit:
    """Hold out a stratified share of ``corrections`` and join the rest to ``base``'s training part.

    Args:
        corrections: rows from :func:`load_corrections`.
        base: the base data's :func:`models.data.split` (same seed).
        seed: the split seed (the training run's ``--seed``).
        holdout: share of each (language, label) group held out, in [0, 1).

    Raises:
        ValueError: ``holdout`` is outside [0, 1).
    """
    if not 0 <= holdout < 1:
        raise ValueError(f"corrections holdout must be in [0, 1), not {holdout}")
    fixed = {r.text for r in (*base.validation, *base.test)}
    kept = [r for r in corrections if r.text not in fixed]
    held_out: list[LabelledComment] = []
    trained: list[LabelledComment] = []
    for group in stratified(kept, seed=seed):
        n = round(len(group) * holdout)
        held_out += group[:n]
        trained += group[n:]
    corrected = {r.text for r in trained} | {r.text for r in held_out}
    base_train = [r for r in base.train if r.text not in corrected]
    return CorrectionsSplit(
        split=Split(train=base_train + trained, validation=base.validation, test=base.test),
        held_out=held_out,
        trained=trained,
        in_fixed_split=len(corrections) - len(kept),
        replaced=len(base.train) - len(base_train),
    )


def check_held_out(held_out: list[LabelledComment], model_dir: Path) -> None:
    """Check the held-out corrections against those the training run of ``model_dir`` wrote
    (nothing to check when it wrote none, e.g. an export directory).

    Raises:
        ValueError: the texts differ (another file, seed or holdout than at training time).
    """
    if (model_dir / HELD_OUT_HASHES).is_file():
        check_split_hashes(
            held_out, model_dir / HELD_OUT_HASHES,
            hint="pass the corrections file, --seed and --corrections-holdout used for training",
        )  # fmt: skip
