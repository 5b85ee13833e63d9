"""From logits to probabilities, the one softmax of the runtime, training and evaluation."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["softmax"]


def softmax(logits: NDArray[np.floating[Any]]) -> NDArray[np.float64]:
    """Row-wise softmax in float64, shifted by the row maximum for numerical safety.

    Args:
        logits: shape (batch_size, num_labels), any float dtype.

    Returns:
        float64 probabilities of the same shape, rows sum to 1.
    """
    wide = np.asarray(logits, dtype=np.float64)
    shifted = np.exp(wide - wide.max(axis=1, keepdims=True))
    probabilities: NDArray[np.float64] = shifted / shifted.sum(axis=1, keepdims=True)
    return probabilities
