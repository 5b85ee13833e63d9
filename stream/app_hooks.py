"""The app's timers and signal handlers: readiness, broker checks, segment ticks, progress.

Each function registers its timer or signal handler on a faust app built by
:func:`stream.app.create_app`; none holds state outside the closures it registers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import faust

from stream.health import Readiness
from stream.metrics import Metrics
from stream.model_registry import Registry
from stream.model_swap import CHECK_INTERVAL_S, ModelWatcher
from stream.segment_sweep import tick_value
from stream.segments import SegmentMembers

__all__ = [
    "BROKER_CHECK_INTERVAL_S",
    "PROGRESS_INTERVAL_S",
    "watch_broker",
    "log_progress",
    "send_ticks",
    "track_readiness",
    "follow_registry",
]

logger = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 60.0
"""Seconds between two ``progress`` log lines of a running worker."""

BROKER_CHECK_INTERVAL_S = 5.0
"""Seconds between two broker checks of a running worker (``portrait_broker_reachable``)."""


def watch_broker(app: faust.App, readiness: Readiness, check: Callable[[], str | None]) -> None:
    """Every :data:`BROKER_CHECK_INTERVAL_S`, run ``check`` on asyncio's default executor (not
    the inference thread) and report its result; log when the broker stops or starts answering."""
    state: dict[str, str | None] = {"problem": None}

    async def broker() -> None:
        problem = await asyncio.get_running_loop().run_in_executor(None, check)
        readiness.broker(problem)
        if problem != state["problem"]:
            if problem is None:
                logger.info("broker reachable again")
            else:
                logger.warning("broker not reachable reason=%s", problem)
        state["problem"] = problem

    app.timer(interval=BROKER_CHECK_INTERVAL_S, name="portrait.broker_check")(broker)


def send_ticks(
    app: faust.App, ticks: faust.TopicT, interval_s: float, members: SegmentMembers | None
) -> None:
    """Write a segment tick (:func:`stream.segment_sweep.tick_value`, this wall clock) to every
    partition of ``ticks`` this worker owns: after each completed rebalance and every
    ``interval_s``."""
    name = ticks.get_topic_name()

    async def send() -> None:
        now_ms = int(time.time() * 1000)
        owned = sorted(tp.partition for tp in app.consumer.assignment() if tp.topic == name)
        for partition in owned:
            await ticks.send(value=tick_value(now_ms), partition=partition)
        logger.info("segment ticks sent partitions=%s now_ms=%d", owned, now_ms)

    async def after_rebalance(sender: Any, /, *args: Any, **kwargs: Any) -> None:
        if members is not None:  # counts of partitions moved elsewhere go; the sweep recounts
            members.retain(tp.partition for tp in app.consumer.assignment() if tp.topic == name)
        await send()

    app.on_rebalance_complete.connect(after_rebalance)
    app.timer(interval=interval_s, name="portrait.segment_ticks")(send)


def track_readiness(app: faust.App, readiness: Readiness) -> None:
    """Ready after each completed rebalance (faust sends ``on_rebalance_complete`` once the
    tables are recovered, just before the streams resume); not ready from a revocation on."""

    async def revoked(sender: Any, /, *args: Any, **kwargs: Any) -> None:
        readiness.not_ready("rebalancing")

    async def stopping(sender: Any, /, *args: Any, **kwargs: Any) -> None:
        readiness.not_ready("stopping")  # as soon as the app begins to stop

    async def complete(sender: Any, /, *args: Any, **kwargs: Any) -> None:
        readiness.ready()

    app.on_partitions_revoked.connect(revoked)
    app.on_before_shutdown.connect(stopping)
    app.on_rebalance_complete.connect(complete)


def log_progress(app: faust.App, metrics: Metrics, sources: tuple[str, ...]) -> None:
    """A ``progress`` line every :data:`PROGRESS_INTERVAL_S` while events arrive, and a summary
    when the worker stops."""
    started = time.monotonic()
    last: dict[str, int] = metrics.totals()  # no line until something happens

    async def progress() -> None:
        totals = metrics.totals()
        if totals != last:  # quiet while idle
            lag = metrics.set_consumer_lag(
                app.monitor.tp_end_offsets, app.monitor.tp_committed_offsets, sources
            )
            logger.info(
                "progress consumed=%d (+%d) dead_lettered=%d profile_updates=%d lag=%d "
                "rerouted=%d",
                totals["consumed"], totals["consumed"] - last.get("consumed", 0),
                totals["dead_lettered"], totals["profile_updates"], sum(lag.values()),
                totals["rerouted"],
            )  # fmt: skip
            last.update(totals)

    async def summary(sender: Any, /, *args: Any, **kwargs: Any) -> None:
        totals = metrics.totals()
        logger.info(
            "worker stopping after %.0f s: consumed=%d dead_lettered=%d profile_updates=%d "
            "duplicates_skipped=%d rerouted=%d",
            time.monotonic() - started, totals["consumed"], totals["dead_lettered"],
            totals["profile_updates"], totals["duplicates_skipped"], totals["rerouted"],
        )  # fmt: skip

    app.timer(interval=PROGRESS_INTERVAL_S, name="portrait.progress")(progress)
    app.on_before_shutdown.connect(summary)


def follow_registry(
    app: faust.App,
    registry: Registry,
    current: str,
    load: Callable[[Any], Any],
    swap: Callable[[Any], None],
    metrics: Metrics,
    shadow: Callable[[Any], None] | None = None,
) -> ModelWatcher:
    """Swap in the registry's live model when it changes (:mod:`stream.model_swap`), and hand
    the staged candidate to ``shadow`` (``None``: no shadow scoring), checked every
    :data:`~stream.model_swap.CHECK_INTERVAL_S`; counts ``portrait_model_swaps_total``."""

    def count(result: str) -> None:
        metrics.model_swaps.labels(result=result).inc()

    for result in ("swapped", "failed", "candidate_failed"):  # series at 0 from the start
        metrics.model_swaps.labels(result=result)

    watcher = ModelWatcher(registry, current, load, swap, count, shadow)
    app.timer(interval=CHECK_INTERVAL_S, name="portrait.model_swap")(watcher.check)
    return watcher
