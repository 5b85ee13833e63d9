"""Running the sentiment classifier on a micro-batch: off the event loop, with bounded retries.

:class:`InferenceRunner` calls ``classifier.predict_proba`` for the whole micro-batch on an
executor (one thread is enough: onnxruntime parallelises inside a call), so the event loop keeps
committing and serving the other agent while the model runs. A failing call is retried
``RetryPolicy.attempts`` times in all with doubling backoff (tenacity); if the batch still fails,
each text is tried once on its own, so one poison text cannot sink its batch, and only the texts
that still fail get an :class:`~models.contract.errors.InferenceError` (the worker dead-letters
them). Nothing here logs or raises the text itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from models.contract.errors import InferenceError
from models.contract.protocol import Classifier
from stream.metrics import Metrics

__all__ = ["Probabilities", "InferenceRunner", "RetryPolicy"]

logger = logging.getLogger(__name__)

Probabilities = tuple[float, float, float]
"""``(p_negative, p_neutral, p_positive)`` of one text."""


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries of a failing inference call.

    Attributes:
        attempts: Calls per micro-batch before falling back to one call per text, >= 1.
        backoff_s: Seconds before the first retry; doubled before each further retry.
    """

    attempts: int = 3
    backoff_s: float = 0.5


class InferenceRunner:
    """Classifies micro-batches of texts off the event loop.

    Args:
        classifier: The sentiment model (kept as :attr:`classifier`).
        metrics: ``portrait_inference_seconds`` (per successful call) and
            ``portrait_inference_failures_total`` (per failed call) are recorded here.
        executor: Where ``predict_proba`` runs; ``None`` = asyncio's default executor.
        retry: Retries of a failing call.

    Raises:
        ValueError: ``retry.attempts`` < 1.
    """

    def __init__(
        self,
        classifier: Classifier,
        *,
        metrics: Metrics,
        executor: Executor | None = None,
        retry: RetryPolicy = RetryPolicy(),
    ) -> None:
        if retry.attempts < 1:
            raise ValueError(f"retry.attempts must be >= 1 (got {retry.attempts})")
        self.classifier = classifier
        self._metrics = metrics
        self._executor = executor
        self._retry = retry

    async def classify(self, texts: list[str]) -> list[Probabilities | InferenceError]:
        """Probabilities per text, in input order; an :class:`InferenceError` where it failed.

        Args:
            texts: The micro-batch's comment texts (any strings).

        Returns:
            One entry per text; ``[]`` for no texts (the model is not called).
        """
        if not texts:
            return []
        attempts = self._retry.attempts

        def failed(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome is not None else None
            logger.warning(
                "inference failed attempt=%d attempts=%d batch_size=%d error=%s",
                state.attempt_number, attempts, len(texts),
                type(getattr(error, "__cause__", None) or error).__name__,
            )  # fmt: skip

        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(InferenceError),
                stop=stop_after_attempt(attempts),
                wait=wait_exponential(multiplier=self._retry.backoff_s),
                after=failed,
                reraise=True,
            ):
                with attempt:
                    return list(await self._predict(texts))
        except InferenceError:
            pass
        if len(texts) == 1:
            return [InferenceError(f"inference failed {self._retry.attempts} times")]
        results: list[Probabilities | InferenceError] = []
        for text in texts:  # isolate the failing texts: one call each, no retry
            try:
                results.extend(await self._predict([text]))
            except InferenceError as exc:
                results.append(exc)
        return results

    async def _predict(self, texts: list[str]) -> list[Probabilities]:
        """One classifier call on the executor.

        Raises:
            InferenceError: The call raised, or returned other than finite probabilities of shape
                (batch_size, 3) with rows summing to 1; the message names the cause's class only.
        """
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        try:
            probs = await loop.run_in_executor(self._executor, self.classifier.predict_proba, texts)
            array = np.asarray(probs, dtype=np.float64)
            if not _are_probabilities(array, len(texts)):
                raise InferenceError(
                    f"classifier returned shape {array.shape}, not probabilities of shape "
                    f"({len(texts)}, 3) with rows summing to 1"
                )
        except Exception as exc:
            self._metrics.inference_failures.inc()
            if isinstance(exc, InferenceError):
                raise
            raise InferenceError(
                f"classifier raised {type(exc).__name__} on a batch of {len(texts)}"
            ) from exc
        self._metrics.inference_seconds.observe(time.perf_counter() - start)
        return [(float(r[0]), float(r[1]), float(r[2])) for r in array]


def _are_probabilities(array: np.ndarray[Any, Any], batch_size: int) -> bool:
    """True for finite probabilities of shape (batch_size, 3) whose rows sum to 1 (within 1e-3)."""
    return (
        array.shape == (batch_size, 3)
        and bool(np.isfinite(array).all())
        and bool(((array >= 0) & (array <= 1)).all())
        and bool((np.abs(array.sum(axis=1) - 1.0) <= 1e-3).all())
    )
