"""Hot swap: a worker follows the registry's live model without a restart.

Every worker started with ``PORTRAIT_MODEL__REGISTRY`` reads the registry's pointer once a
second (:data:`CHECK_INTERVAL_S`). When the live version changes (``portrait model promote`` or
``rollback``), it loads that model in a thread, off the event loop, and hands it to the comment
path, which swaps it in before its next micro-batch (``CommentProcessor.swap_model``): a batch is
scored by one model, and each verdict records its ``model_version``. A model that fails to load
leaves the current one serving, is counted in ``portrait_model_swaps_total{result="failed"}`` and
is not tried again until the pointer changes.

Why the pointer file and not a control topic read by every worker: the model's files must be on
every worker's disk anyway (a shared volume or the image), and the pointer sits beside them,
replaced atomically; watching it cannot announce a version whose files a worker does not have,
needs no extra topic, and a worker that (re)starts reads the same pointer it then watches. A
control topic would add a second source of truth that can disagree with the files.

A kill -9 during a swap loses nothing: the model is not state; the restarted worker loads the live
model from the pointer, and the events whose offsets were not committed are applied once by the
profile's idempotent apply.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stream.model_registry import Registry

__all__ = ["CHECK_INTERVAL_S", "ModelWatcher"]

logger = logging.getLogger(__name__)

CHECK_INTERVAL_S = 1.0
"""Seconds between two reads of the registry's pointer."""


class ModelWatcher:
    """Loads the registry's live model when it changes and hands it over.

    Args:
        registry: The registry the worker was started with.
        current: The version the worker serves now.
        load: Loads a model directory (blocking; run in a thread).
        apply: Called on the event loop with the loaded model (swaps it in, sets
            ``portrait_model_info``).
        count: Called with ``"swapped"`` or ``"failed"`` after each attempt to swap, and with
            ``"candidate_failed"`` when a staged candidate does not load.
        apply_candidate: Called on the event loop with the staged candidate once loaded, and
            with ``None`` when no candidate is staged any more (shadow scoring,
            :mod:`stream.shadow`); ``None``: candidates are not loaded.
    """

    def __init__(
        self,
        registry: Registry,
        current: str,
        load: Callable[[Path], Any],
        apply: Callable[[Any], None],
        count: Callable[[str], None] = lambda result: None,
        apply_candidate: Callable[[Any], None] | None = None,
    ) -> None:
        self._registry = registry
        self._current = current
        self._load = load
        self._apply = apply
        self._count = count
        self._failed: str | None = None
        self._apply_candidate = apply_candidate
        self._candidate: str | None = None

    @property
    def current(self) -> str:
        """The version served (or about to be, from the next micro-batch)."""
        return self._current

    async def check(self) -> None:
        """Read the pointer; load and apply a new live model, then a new candidate. Never
        raises."""
        try:
            pointer = self._registry.pointer()
        except (OSError, ValueError) as exc:
            logger.warning("model registry pointer unreadable: %s", exc)
            return
        await self._follow_live(pointer.live)
        if self._apply_candidate is not None and pointer.candidate != self._candidate:
            await self._follow_candidate(pointer.candidate)

    async def _loaded(self, version: str, failure: str) -> Any | None:
        """The model ``version`` loaded in a thread, or ``None`` (counted as ``failure``)."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(None, self._load, self._registry.model_dir(version))
        except Exception as exc:  # any load failure: counted and logged, never raised
            self._count(failure)
            logger.error("model %s did not load (%s): %s", version, failure, exc)
            return None

    async def _follow_candidate(self, candidate: str | None) -> None:
        assert self._apply_candidate is not None
        self._candidate = candidate
        model = None if candidate is None else await self._loaded(candidate, "candidate_failed")
        if candidate is not None and model is None:
            return  # a candidate that does not load is not shadow-scored
        if model is not None:
            logger.info("candidate loaded for shadow scoring model_version=%s", candidate)
        self._apply_candidate(model)

    async def _follow_live(self, live: str | None) -> None:
        if live is None or live in (self._current, self._failed):
            return
        logger.info("model swap started from=%s to=%s", self._current, live)
        model = await self._loaded(live, "failed")
        if model is None:  # keep serving the current model
            self._failed = live
            return
        self._apply(model)
        self._current, self._failed = live, None
        self._count("swapped")
        logger.info("model swap ready model_version=%s (from the next micro-batch)", live)
