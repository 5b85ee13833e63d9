"""Prometheus metrics of the worker, on a registry passed in (never the global default).

Names follow the Prometheus conventions (https://prometheus.io/docs/practices/naming/): prefix
``portrait_``, base units (``_seconds``), ``_total`` on counters. No label takes values that grow
with users, items or texts: the label values are topic names, reason codes, class labels and the
model description.

Example:
    >>> from prometheus_client import CollectorRegistry
    >>> metrics = Metrics(CollectorRegistry())
    >>> metrics.events_consumed.labels(topic="comments.v1").inc()
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = [
    "ALLOWED_LABELS",
    "BATCH_SIZE_BUCKETS",
    "LATENCY_BUCKETS_S",
    "Metrics",
]

logger = logging.getLogger(__name__)

_TP = TypeVar("_TP", bound=tuple[str, int])  # (topic, partition); faust's TP namedtuple fits

ALLOWED_LABELS = frozenset(
    {"topic", "reason", "label", "model_version", "provider", "device", "requested_device"}
)
"""Every label name a Portrait metric may carry; none identifies a user, item or text."""

BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
"""Histogram buckets of ``portrait_batch_size``, events (up to the 4096 maximum batch size)."""

LATENCY_BUCKETS_S = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0,
)  # fmt: skip
"""Histogram buckets, seconds, of the inference, batch-wait and end-to-end latency histograms."""


class Metrics:
    """The worker's metrics, registered on ``registry``.

    Attributes:
        events_consumed: ``portrait_events_consumed_total{topic}``: source events read.
        events_dead_lettered: ``portrait_events_dead_lettered_total{topic, reason}``: events
            written to the dead-letter topic; ``reason`` is an ``EventError.reason`` code.
        events_rerouted: ``portrait_events_rerouted_total{topic}``: events found off their key's
            partition and re-routed through the topic's repartition topic.
        segment_transitions: ``portrait_segment_transitions_total{segment, transition}``: users
            entering (``entered``) or leaving (``exited``) a segment.
        segment_members: ``portrait_segment_members{segment}``: users in the segment over this
            worker's partitions (sum over workers for the whole group).
        shadow_events, shadow_agreements, shadow_predictions, shadow_skipped, shadow_failures,
        shadow_inference_seconds: ``portrait_shadow_*{candidate}``: the candidate model scored
            in shadow (:mod:`stream.shadow`).
        model_swaps: ``portrait_model_swaps_total{result}``: hot swaps to the registry's live
            model, ``swapped`` or ``failed`` (:mod:`stream.model_swap`).
        segment_errors: ``portrait_segment_errors_total{segment}``: conditions that failed for a
            profile (counted, treated as deciding nothing).
        duplicates_skipped: ``portrait_duplicate_events_skipped_total{topic, reason}``: events
            the profile had already applied: ``offset`` (a redelivery after a restart or
            rebalance) or ``event_id`` (the same event resent at a new offset).
        inference_failures: ``portrait_inference_failures_total``: failed inference attempts.
        batch_size: ``portrait_batch_size``: events per micro-batch (histogram).
        inference_seconds: ``portrait_inference_seconds``: tokenization plus onnxruntime per
            micro-batch, seconds.
        batch_wait_seconds: ``portrait_batch_wait_seconds``: first event taken to batch closed,
            seconds.
        end_to_end_latency_seconds: ``portrait_end_to_end_latency_seconds``: event time to profile
            update emitted, seconds.
        predictions: ``portrait_predictions_total{label}``: comments classified, by predicted label.
        mixed_comments: ``portrait_mixed_comments_total``: comments applied to a profile whose
            clauses carry confident opposite polarities (:mod:`models.contract.mixed`).
        profile_updates: ``portrait_profile_updates_total``: profile-update events emitted.
        model_info: ``portrait_model_info{model_version, provider, device, requested_device}``:
            1 for the model in use; ``device`` is where it runs, ``requested_device`` the
            ``PORTRAIT_MODEL__DEVICE`` setting (``auto``, ``cpu`` or ``cuda``).
        consumer_lag: ``portrait_consumer_lag_events{topic}``: source events not yet committed by
            this worker, summed over its assigned partitions (log end offset minus committed
            offset, see :meth:`set_consumer_lag`).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        """Create and register the metrics.

        Args:
            registry: Where to register; one registry per :class:`Metrics`.

        Raises:
            ValueError: The registry already holds these metric names.
        """
        self.registry = registry
        kw: dict[str, Any] = {"registry": registry, "namespace": "portrait"}
        self.events_consumed = Counter("events_consumed", "Source events read.", ["topic"], **kw)
        self.events_dead_lettered = Counter(
            "events_dead_lettered",
            "Events written to the dead-letter topic.",
            ["topic", "reason"],
            **kw,
        )
        self.events_rerouted = Counter(
            "events_rerouted",
            "Events found off their key's partition and sent through the repartition topic "
            "to it (PORTRAIT_TOPICS__WRONG_PARTITION=reroute).",
            ["topic"],
            **kw,
        )
        self.segment_transitions = Counter(
            "segment_transitions",
            "Users entering or leaving a segment.",
            ["segment", "transition"],
            **kw,
        )
        self.segment_members = Gauge(
            "segment_members",
            "Users in each segment, over the partitions this worker owns.",
            ["segment"],
            **kw,
        )
        self.model_swaps = Counter(
            "model_swaps",
            "Hot swaps to the registry's live model (PORTRAIT_MODEL__REGISTRY): result swapped, "
            "or failed (the model did not load; the current one keeps serving).",
            ["result"],
            **kw,
        )
        shadow = ["candidate"]
        self.shadow_events = Counter(
            "shadow_events", "Comments the candidate model scored in shadow.", shadow, **kw
        )
        self.shadow_agreements = Counter(
            "shadow_agreements",
            "Shadow-scored comments where the candidate's label equals the live model's.",
            shadow,
            **kw,
        )
        self.shadow_predictions = Counter(
            "shadow_predictions",
            "Labels given to shadow-scored comments, by model (live or candidate).",
            [*shadow, "model", "label"],
            **kw,
        )
        self.shadow_skipped = Counter(
            "shadow_skipped",
            "Comments not shadow-scored: the candidate was still scoring the previous batch.",
            shadow,
            **kw,
        )
        self.shadow_failures = Counter(
            "shadow_failures",
            "Shadow calls that raised or returned non-finite probabilities.",
            shadow,
            **kw,
        )
        self.shadow_inference_seconds = Histogram(
            "shadow_inference_seconds",
            "Seconds per shadow call of the candidate model (its own thread).",
            shadow,
            buckets=LATENCY_BUCKETS_S,
            **kw,
        )
        self.segment_errors = Counter(
            "segment_errors",
            "Segment conditions that failed for a profile (missing field, null, wrong type); "
            "no transition was decided.",
            ["segment"],
            **kw,
        )
        self.duplicates_skipped = Counter(
            "duplicate_events_skipped",
            "Events already applied: a redelivered offset (reason offset) or a resent event_id "
            "(reason event_id).",
            ["topic", "reason"],
            **kw,
        )
        self.inference_failures = Counter(
            "inference_failures", "Failed inference attempts on a micro-batch.", **kw
        )
        self.batch_size = Histogram(
            "batch_size", "Events per micro-batch.", buckets=BATCH_SIZE_BUCKETS, **kw
        )
        self.inference_seconds = Histogram(
            "inference_seconds", "Tokenization and onnxruntime time per micro-batch.",
            buckets=LATENCY_BUCKETS_S, **kw,
        )  # fmt: skip
        self.batch_wait_seconds = Histogram(
            "batch_wait_seconds", "Time from a batch's first event to its close.",
            buckets=LATENCY_BUCKETS_S, **kw,
        )  # fmt: skip
        self.end_to_end_latency_seconds = Histogram(
            "end_to_end_latency_seconds", "Event time to profile update emitted.",
            buckets=LATENCY_BUCKETS_S, **kw,
        )  # fmt: skip
        self.predictions = Counter("predictions", "Comments classified, by label.", ["label"], **kw)
        self.mixed_comments = Counter(
            "mixed_comments", "Comments with clauses of confident opposite polarity.", **kw
        )
        self.profile_updates = Counter("profile_updates", "Profile-update events emitted.", **kw)
        self.model_info = Gauge(
            "model_info",
            "The loaded model; value 1.",
            ["model_version", "provider", "device", "requested_device"],
            **kw,
        )
        self.consumer_lag = Gauge(
            "consumer_lag_events",
            "Source events behind the log end, over this worker's assigned partitions.",
            ["topic"],
            **kw,
        )
        self._segment_transition_series: dict[tuple[str, str], Any] = {}

    def count_segment_transition(self, segment: str, transition: str) -> None:
        """Count one transition in ``portrait_segment_transitions_total``; the labelled series
        are looked up once each (a micro-batch can decide many transitions)."""
        key = (segment, transition)
        series = self._segment_transition_series.get(key)
        if series is None:
            series = self.segment_transitions.labels(segment=segment, transition=transition)
            self._segment_transition_series[key] = series
        series.inc()

    def set_model_info(
        self, model_version: str, provider: str, device: str, *, requested_device: str
    ) -> None:
        """Set ``portrait_model_info`` to 1 for this model, removing any earlier model's series.

        Args:
            model_version: The manifest's model version.
            provider: onnxruntime provider in use, e.g. ``"CPUExecutionProvider"``.
            device: ``"cpu"`` or ``"cuda"``: where the model runs.
            requested_device: The ``PORTRAIT_MODEL__DEVICE`` setting: ``"auto"``, ``"cpu"`` or
                ``"cuda"`` (the alert on CPU-when-CUDA-was-asked-for compares the two).
        """
        self.model_info.clear()
        self.model_info.labels(
            model_version=model_version, provider=provider, device=device,
            requested_device=requested_device,
        ).set(1)  # fmt: skip

    def totals(self) -> dict[str, int]:
        """What the worker has done since it started, summed over labels: ``consumed``,
        ``dead_lettered``, ``rerouted``, ``profile_updates``, ``duplicates_skipped`` (events)."""

        def total(name: str) -> int:
            return int(sum(
                s.value for m in self.registry.collect() if m.name == f"portrait_{name}"
                for s in m.samples if s.name.endswith("_total")
            ))  # fmt: skip

        return {
            "consumed": total("events_consumed"),
            "dead_lettered": total("events_dead_lettered"),
            "rerouted": total("events_rerouted"),
            "profile_updates": total("profile_updates"),
            "duplicates_skipped": total("duplicate_events_skipped"),
        }

    def set_consumer_lag(
        self,
        end_offsets: Mapping[_TP, int],
        committed_offsets: Mapping[_TP, int],
        topics: Iterable[str],
    ) -> dict[str, int]:
        """Set ``portrait_consumer_lag_events{topic}`` from offsets the consumer already knows.

        Lag per partition is ``end - committed`` (Kafka's consumer-group lag: the committed
        offset is the next offset to process), floored at 0; a partition missing from either
        mapping (nothing fetched or committed yet by this process) counts 0. Every topic in
        ``topics`` gets a value, 0 when none of its partitions is known.

        Args:
            end_offsets: ``(topic, partition)`` -> log end offset (high watermark) as last seen
                by the consumer; faust ``TP`` keys fit.
            committed_offsets: ``(topic, partition)`` -> last committed offset.
            topics: The source topics to report.

        Returns:
            Topic -> lag in events, as set on the gauge.
        """
        lag = dict.fromkeys(topics, 0)
        for tp, end in end_offsets.items():
            topic = tp[0]
            committed = committed_offsets.get(tp)
            if topic in lag and committed is not None:
                lag[topic] += max(0, int(end) - int(committed))
        for topic, events in lag.items():
            self.consumer_lag.labels(topic=topic).set(events)
        return lag
