"""``portrait model report``: how the staged candidate compares with the live model.

Two sources, one report:

- the workers' shadow metrics (:mod:`stream.shadow`), read from their Prometheus endpoints and
  summed: comments scored, agreement with the live model, each model's label shares, the
  candidate's cost per call against the live model's, skipped and failed calls;
- the corrections on ``labels.v1`` (:mod:`stream.labels`), scored here by both models: each one's
  accuracy against the labels people gave, on the same rows.
"""

from __future__ import annotations

import urllib.request
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from models.contract.labels import LABELS
from stream.event_time import parse_event_time
from stream.labels import Correction

__all__ = ["correction_accuracy", "made_since", "shadow_summary", "sum_metrics"]


Samples = dict[tuple[str, tuple[Any, ...]], float]
"""``(metric sample name, sorted label pairs) -> value``."""


def sum_metrics(urls: Iterable[str], timeout_s: float = 5.0) -> Samples:
    """Every sample of every endpoint, summed over the endpoints: ``(name, labels) -> value``.

    Raises:
        OSError: An endpoint cannot be read.
    """
    total: Samples = defaultdict(float)
    for url in urls:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            text = response.read().decode("utf-8", "replace")
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                total[(sample.name, tuple(sorted(sample.labels.items())))] += sample.value
    return dict(total)


def _get(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def shadow_summary(samples: Samples, candidate: str) -> dict[str, Any]:
    """The candidate's shadow figures from summed worker metrics.

    Returns:
        ``events``, ``agreement`` (share of comments with the live model's label; None without
        events), ``shares`` (``{"live"|"candidate": {label: share}}``), ``candidate_s_per_call``
        and ``live_s_per_call`` (mean seconds per inference call), ``skipped``, ``failures``.
    """

    def mean(name: str, **labels: str) -> float | None:
        count = _get(samples, f"{name}_count", **labels)
        return _get(samples, f"{name}_sum", **labels) / count if count else None

    events = _get(samples, "portrait_shadow_events_total", candidate=candidate)
    shares = {}
    for model in ("live", "candidate"):
        counts = {label: _get(samples, "portrait_shadow_predictions_total", candidate=candidate,
                              model=model, label=label) for label in LABELS}  # fmt: skip
        total = sum(counts.values())
        shares[model] = {k: (v / total if total else None) for k, v in counts.items()}
    return {
        "events": int(events),
        "agreement": (_get(samples, "portrait_shadow_agreements_total", candidate=candidate)
                      / events) if events else None,
        "shares": shares,
        "candidate_s_per_call": mean("portrait_shadow_inference_seconds", candidate=candidate),
        "live_s_per_call": mean("portrait_inference_seconds"),
        "skipped": int(_get(samples, "portrait_shadow_skipped_total", candidate=candidate)),
        "failures": int(_get(samples, "portrait_shadow_failures_total", candidate=candidate)),
    }  # fmt: skip


def made_since(corrections: Sequence[Correction], since: str | None) -> list[Correction]:
    """The corrections made at or after ``since`` (RFC 3339, e.g. the pointer's ``staged_at``);
    all of them when ``since`` is None."""
    if since is None:
        return list(corrections)
    start = parse_event_time(since)
    return [c for c in corrections if c.corrected_at >= start]


def correction_accuracy(
    corrections: Sequence[Correction], models: dict[str, Any]
) -> dict[str, Any]:
    """Each model's accuracy on the corrections: its arg-max label == the corrected label.

    Args:
        corrections: :func:`stream.labels.live_corrections` of ``labels.v1``.
        models: Role (``live``, ``candidate``) -> a model with ``predict_proba``.

    Returns:
        ``{"rows": n, "live": accuracy | None, "candidate": accuracy | None}``.
    """
    result: dict[str, Any] = {"rows": len(corrections)}
    texts = [c.text for c in corrections]
    for role, model in models.items():
        if not texts:
            result[role] = None
            continue
        picks = model.predict_proba(texts).argmax(axis=1)
        right = sum(
            LABELS[int(p)] == c.corrected_label for p, c in zip(picks, corrections, strict=True)
        )
        result[role] = right / len(texts)
    return result
