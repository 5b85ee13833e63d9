"""Summaries of repeated measurements: median with its spread, ratios, latency percentiles.

Percentiles are nearest-rank (the value at rank ``ceil(p/100 * n)`` of the sorted sample), as in
:func:`stream.tools.demo_report.latency_percentiles`, so a reported p99 is a latency that was
observed.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["PERCENTILES", "Spread", "nearest_rank", "paired_ratio"]

PERCENTILES = (50, 95, 99)
"""Latency percentiles reported."""


@dataclass(frozen=True)
class Spread:
    """The median of repeated measurements and their range.

    Attributes:
        median: Median of ``values`` (mean of the middle two for an even count).
        min: Smallest value.
        max: Largest value.
        values: Every measurement, in the order taken.
    """

    median: float
    min: float
    max: float
    values: tuple[float, ...]

    @classmethod
    def of(cls, values: Iterable[float]) -> Spread:
        """The spread of ``values``.

        Raises:
            ValueError: ``values`` is empty.
        """
        sample = tuple(float(v) for v in values)
        if not sample:
            raise ValueError("a spread needs at least one value")
        return cls(statistics.median(sample), min(sample), max(sample), sample)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: median, min, max, values."""
        data = asdict(self)
        data["values"] = list(self.values)
        return data


def paired_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> Spread:
    """Ratios of measurements taken as pairs (repeat ``i`` of one over repeat ``i`` of the other).

    The bench runs the repeats of the two sides back to back, so each pair saw the same background
    load on a shared machine; the spread of the pairwise ratios is the spread reported.

    Raises:
        ValueError: the sequences are empty, differ in length, or a denominator is not positive.
    """
    if len(numerators) != len(denominators) or not numerators:
        raise ValueError("paired ratios need two non-empty sequences of the same length")
    if any(d <= 0 for d in denominators):
        raise ValueError("denominators must be positive")
    return Spread.of(n / d for n, d in zip(numerators, denominators, strict=True))


def nearest_rank(
    values: Sequence[float], percentiles: Sequence[int] = PERCENTILES
) -> dict[str, float]:
    """Nearest-rank percentiles of ``values``.

    Args:
        values: The sample (any order).
        percentiles: Percentiles in 1..100.

    Returns:
        ``{"p50": ..., "p95": ..., "p99": ...}`` (keys ``"p<percentile>"``).

    Raises:
        ValueError: ``values`` is empty.
    """
    if not values:
        raise ValueError("percentiles need at least one value")
    # numpy's "inverted_cdf" method is the nearest-rank definition: an observed value
    return {f"p{p}": float(np.percentile(values, p, method="inverted_cdf")) for p in percentiles}
