"""Classification figures in plain numpy: per-class precision/recall/F1, accuracy, macro-F1,
confusion matrix and expected calibration error."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from models.contract.labels import LABELS
from models.contract.logits import softmax

__all__ = ["classification_report", "expected_calibration_error", "softmax"]


def expected_calibration_error(
    probabilities: npt.NDArray[np.floating], y_true: Sequence[int], n_bins: int = 15
) -> float:
    """Expected calibration error of the top-1 prediction over equal-width confidence bins.

    Source: Guo et al. 2017, "On Calibration of Modern Neural Networks" (ICML), eq. 3, 15 bins.

    Args:
        probabilities: shape (n, num_labels), rows sum to 1.
        y_true: n true label indices.

    Returns:
        ECE in [0, 1]: the bin-size-weighted mean |accuracy - confidence|.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    if len(p) == 0:
        return 0.0
    confidence = p.max(axis=1)
    correct = p.argmax(axis=1) == np.asarray(y_true)
    bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        in_bin = bins == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def classification_report(
    y_true: Sequence[int],
    y_pred: Sequence[int],
    labels: Sequence[str] = LABELS,
    *,
    averaged: Sequence[str] | None = None,
) -> dict[str, object]:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix.

    Args:
        y_true: true label indices into ``labels``.
        y_pred: predicted label indices into ``labels``.
        labels: the class names, in index order.
        averaged: the classes macro-F1 averages over (default: all). For a test set that
            annotates only negative/positive, pass those two: a neutral prediction then still
            counts as an error (a missed negative or positive) but neutral's own F1 of 0 is not
            averaged in.

    Returns:
        ``{"accuracy", "macro_f1", "per_class": {label: {precision, recall, f1, support}},
        "confusion_matrix": rows = true label, columns = predicted label}``. A class with no
        prediction has precision 0 (and F1 0), as scikit-learn's ``zero_division=0``.
    """
    k = len(labels)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)), 1)
    per_class = {}
    for i, label in enumerate(labels):
        tp = cm[i, i]
        precision = tp / cm[:, i].sum() if cm[:, i].sum() else 0.0
        recall = tp / cm[i].sum() if cm[i].sum() else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {
            "precision": float(precision), "recall": float(recall),
            "f1": float(f1), "support": int(cm[i].sum()),
        }  # fmt: skip
    total = cm.sum()
    return {
        "accuracy": float(np.trace(cm) / total) if total else 0.0,
        "macro_f1": float(np.mean([per_class[c]["f1"] for c in (averaged or labels)])),
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
    }
