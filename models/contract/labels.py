"""The sentiment classes, in the order of a model's logits and probability columns.

Every exported graph, the manifest's ``labels``, the profile's label counts and the training data
use this order.
"""

from __future__ import annotations

__all__ = ["LABELS"]

LABELS: tuple[str, ...] = ("negative", "neutral", "positive")
"""Class names, in logits-column order: index 0 negative, 1 neutral, 2 positive."""
