"""What the worker needs of a classifier, apart from any runtime (no onnxruntime import).

Implemented by :class:`models.contract.classifier.SentimentClassifier` (one ONNX graph),
:class:`models.contract.routing.RoutedClassifier` (graphs per script) and the fakes of the tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

__all__ = ["Classifier"]


class Classifier(Protocol):
    """A sentiment classifier as the worker calls it.

    Attributes:
        labels: Class names in probability-column order (:data:`models.contract.labels.LABELS`).
        model_version: Recorded with every verdict (the manifest's ``model_version``).
        provider: The onnxruntime provider in use, e.g. ``"CPUExecutionProvider"``.
    """

    labels: tuple[str, ...]
    model_version: str
    provider: str

    def predict_proba(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """float32 probabilities, shape (batch_size, num_labels), rows sum to 1, input order."""
        ...
