"""Shadow scoring: the registry's candidate scores the same comments as the live model, and only
metrics see its verdicts.

A worker started with ``PORTRAIT_MODEL__REGISTRY`` loads the staged candidate (off the event loop,
like a hot swap) and offers it every comment micro-batch the live model scored, until
``PORTRAIT_MODEL__SHADOW_EVENTS`` comments were scored for that candidate;
``PORTRAIT_MODEL__SHADOW_SHARE`` below 1 offers only that share of the micro-batches (every
fourth at 0.25, deterministically), for machines where the candidate's CPU would slow the live
path (measured in ``portrait bench``'s shadow phase). The candidate runs on
its own thread, after the live verdicts were taken, and at most one micro-batch at a time: a
batch offered while the previous one is still being scored is skipped (counted), so the live
path never waits for the candidate. Its verdicts never touch a profile.

Metrics (label ``candidate`` = its model version): ``portrait_shadow_events_total``,
``portrait_shadow_agreements_total`` (same arg-max label as the live model),
``portrait_shadow_predictions_total{model="live"|"candidate", label}``,
``portrait_shadow_skipped_total``, ``portrait_shadow_failures_total`` (a call that raised or
returned non-finite probabilities) and ``portrait_shadow_inference_seconds``.
``portrait model report`` sums them over the workers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Any

import numpy as np

from models.contract.labels import LABELS
from stream.metrics import Metrics

__all__ = ["ShadowScorer"]

logger = logging.getLogger(__name__)


class ShadowScorer:
    """Scores offered micro-batches with a candidate model, for metrics only.

    Args:
        model: The candidate (``predict_proba(texts) -> (n, 3)``, ``model_version``).
        metrics: Where the ``portrait_shadow_*`` metrics go.
        limit: Comments to score before stopping (> 0).
        executor: The candidate's own thread (one worker), apart from the live model's.
        share: Share of the micro-batches offered that are scored, in (0, 1]: each offer adds
            ``share`` of credit and a batch is taken when a whole credit is there.
    """

    def __init__(
        self, model: Any, metrics: Metrics, limit: int, executor: Executor, share: float = 1.0
    ) -> None:
        self.model = model
        self._share = share
        self._credit = 1.0 - share  # the first batch offered is scored
        self._metrics = metrics
        self._limit = limit
        self._executor = executor
        self._label = {"candidate": str(model.model_version)}
        self.scored = 0
        self._task: asyncio.Task[None] | None = None
        for counter in (metrics.shadow_events, metrics.shadow_agreements,
                        metrics.shadow_skipped, metrics.shadow_failures):  # fmt: skip
            counter.labels(**self._label)  # series at 0 from the start: dashboards show 0

    @property
    def done(self) -> bool:
        """Whether the candidate scored its ``limit`` of comments."""
        return self.scored >= self._limit

    def offer(self, texts: Sequence[str], live: Sequence[tuple[float, float, float]]) -> None:
        """Score ``texts`` in the background (returns at once; call on the event loop).

        Args:
            texts: Comment texts the live model scored.
            live: The live model's probabilities of each, same order.
        """
        if not texts or self.done:
            return
        self._credit += self._share
        if self._credit < 1.0 - 1e-9:
            return  # sampled out (PORTRAIT_MODEL__SHADOW_SHARE)
        self._credit -= 1.0
        if self._task is not None and not self._task.done():
            self._metrics.shadow_skipped.labels(**self._label).inc(len(texts))
            return
        take = min(len(texts), self._limit - self.scored)
        self.scored += take
        self._task = asyncio.get_running_loop().create_task(
            self._score(list(texts[:take]), np.asarray(live[:take], dtype=np.float64))
        )

    async def _score(self, texts: list[str], live: np.ndarray[Any, Any]) -> None:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            rows = np.asarray(
                await loop.run_in_executor(self._executor, self.model.predict_proba, texts),
                dtype=np.float64,
            )
            if rows.shape != live.shape or not np.isfinite(rows).all():
                raise ValueError(f"candidate returned {rows.shape} or non-finite probabilities")
        except Exception as exc:  # a bad candidate: counted, never fatal to the worker
            self._metrics.shadow_failures.labels(**self._label).inc()
            logger.warning("shadow scoring failed candidate=%s: %s", self._label["candidate"], exc)
            return
        self._metrics.shadow_inference_seconds.labels(**self._label).observe(
            time.perf_counter() - started
        )
        mine, theirs = rows.argmax(axis=1), live.argmax(axis=1)
        self._metrics.shadow_events.labels(**self._label).inc(len(texts))
        self._metrics.shadow_agreements.labels(**self._label).inc(int((mine == theirs).sum()))
        for model, picks in (("candidate", mine), ("live", theirs)):
            for index, count in zip(*np.unique(picks, return_counts=True), strict=True):
                self._metrics.shadow_predictions.labels(
                    **self._label, model=model, label=LABELS[int(index)]
                ).inc(int(count))
