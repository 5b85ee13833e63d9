"""The faust topology: source topics, the profile table, the three agents, the output topics.

::

    comments.v1 (raw bytes) --> comments agent: micro-batch -> decode -> classify -> apply --+
    behavior.v1 (raw bytes) --> behaviour agent: micro-batch -> decode -> apply -------------+
    erasure.v1 (raw bytes) ---> erasure agent: decode -> delete profile -> tombstone --------+
                                                                                            |
        profiles table (rocksdb://, changelog <app_id>-profiles-changelog) <----------------+
        profile-updates.v1 (key = user id, at most one per user per micro-batch) <-----------+
        portrait-dlq.v1 (original key/value bytes + portrait.* headers) <--------------------+

All three source topics are co-partitioned with the table (same partition count, key = user id).

The agents are thin glue: the work is :mod:`stream.processing` (one processor per source topic).

Acknowledgement and commit: the agents iterate ``stream.noack()``, so faust acks nothing by itself.
A micro-batch's events are acked only after its processor returned, i.e. after the batch's
profiles were written to the table (local RocksDB at once, changelog enqueued on the producer) and
the broker confirmed its profile updates and dead-letter records. faust's commit task (every
``broker_commit_interval``, 2.8 s) flushes the producer, so the changelog records are written, and
then commits per partition the offset after the last *contiguous* acked event. An exception in an
agent stops the whole worker (``CrashingSupervisor``) with the batch unacked: on restart Kafka
delivers it again and the profiles skip what they had already applied (offsets in the profile).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

import faust
from mode import CrashingSupervisor
from prometheus_client import CollectorRegistry

from models.contract.errors import ConfigError
from models.contract.protocol import Classifier
from models.contract.routing import load_model
from stream.app_hooks import (
    BROKER_CHECK_INTERVAL_S,
    PROGRESS_INTERVAL_S,
    follow_registry,
    log_progress,
    send_ticks,
    track_readiness,
    watch_broker,
)
from stream.committed_reads import MarkerCommitter
from stream.erasure import ErasureProcessor
from stream.faust_adapters import (
    TableErasureLedger,
    TableProfileStore,
    TopicSink,
    consume_in_batches,
)
from stream.health import Readiness
from stream.metrics import Metrics
from stream.model_registry import Registry, load_configured_model
from stream.privacy import Pseudonymiser
from stream.processing import BehaviorProcessor, CommentProcessor, Outputs
from stream.rebalance import SeekFirstTransport
from stream.segment_definitions import Segment, compiled_segments
from stream.segment_sweep import SegmentSweep
from stream.segments import SegmentEvaluator, SegmentMembers
from stream.settings import KafkaSettings, Settings
from stream.shadow import ShadowScorer

__all__ = [
    "ERASURE_LEDGER_NAME",
    "BROKER_CHECK_INTERVAL_S",
    "LAG_INTERVAL_S",
    "MARKER_INTERVAL_S",
    "PROGRESS_INTERVAL_S",
    "TABLE_NAME",
    "changelog_topic_name",
    "create_app",
    "require_bootstrap_servers",
]

logger = logging.getLogger(__name__)

LAG_INTERVAL_S = 5.0
"""Seconds between updates of ``portrait_consumer_lag_events``."""

MARKER_INTERVAL_S = 5.0
"""Seconds between checks for trailing transaction markers (:class:`MarkerCommitter`); a
partition ending in one reaches its end offset within two intervals of going idle."""

TABLE_NAME = "profiles"
"""Name of the profile table; its changelog topic is ``<app_id>-profiles-changelog``."""

ERASURE_LEDGER_NAME = "erasures"
"""Name of the erasure-ledger table (changelog ``<app_id>-erasures-changelog``)."""


def changelog_topic_name(app_id: str) -> str:
    """The changelog topic faust uses for the profile table of app ``app_id``."""
    return f"{app_id}-{TABLE_NAME}-changelog"


def _raw_topic(app: faust.App, *names: str, partitions: int) -> faust.TopicT:
    """A topic (or several, read as one stream) whose keys and values are bytes, untouched by
    faust (no codec)."""
    return app.topic(
        *names, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
        partitions=partitions,
    )  # fmt: skip


def _with_repartition(source: str, repartition: dict[str, str]) -> list[str]:
    """The topics an agent reads: ``source`` and, when re-routing is on, its repartition topic."""
    return [source, *([repartition[source]] if source in repartition else [])]


def _owned_executor(app: faust.App, name: str = "portrait-inference") -> Executor:
    """A 1-thread executor (inference, or shadow scoring), shut down when the app stops."""
    executor = ThreadPoolExecutor(1, thread_name_prefix=name)

    async def shutdown(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        executor.shutdown(wait=False, cancel_futures=True)

    app.on_before_shutdown.connect(shutdown)
    return executor


def _credentials(kafka: KafkaSettings) -> Any:
    """faust broker credentials for the security settings (``None`` for PLAINTEXT)."""
    import ssl

    protocol = kafka.security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = None
    if protocol.endswith("SSL"):
        context = ssl.create_default_context(
            cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None
        )
    if protocol.startswith("SASL_"):
        password = kafka.sasl_password.get_secret_value() if kafka.sasl_password else None
        return faust.SASLCredentials(
            username=kafka.sasl_username, password=password,
            mechanism=kafka.sasl_mechanism, ssl_context=context,
        )  # fmt: skip
    return faust.SSLCredentials(context)


def require_bootstrap_servers(settings: Settings) -> list[str]:
    """The bootstrap servers as ``host:port`` strings.

    Raises:
        ConfigError: ``PORTRAIT_KAFKA__BOOTSTRAP_SERVERS`` is empty.
    """
    servers = settings.kafka.bootstrap_list
    if not servers:
        raise ConfigError(
            "PORTRAIT_KAFKA__BOOTSTRAP_SERVERS: Portrait needs the Kafka bootstrap servers, "
            "e.g. PORTRAIT_KAFKA__BOOTSTRAP_SERVERS=localhost:9092 (`portrait demo` starts a "
            "local broker itself)",
            env_vars=["PORTRAIT_KAFKA__BOOTSTRAP_SERVERS"],
        )
    return servers


def create_app(
    settings: Settings,
    classifier: Classifier | None = None,
    registry: CollectorRegistry | None = None,
    executor: Executor | None = None,
    readiness: Readiness | None = None,
    broker_check: Callable[[], str | None] | None = None,
    segments: list[Segment] | None = None,
) -> faust.App:
    """Build the Portrait faust app: topics, the profile table and the three agents.

    Args:
        settings: All settings (bootstrap servers are required).
        classifier: The sentiment model; ``None`` loads it from ``settings.model``.
        registry: Prometheus registry for the metrics; ``None`` = a new private one.
        executor: Runs inference off the event loop; ``None`` = a new 1-thread executor.
        readiness: Set ready when a rebalance completes (partitions assigned, tables
            recovered), not ready when partitions are revoked; ``None`` = not tracked.
        segments: Compiled segments; ``None`` = read ``settings.segments.path`` (none when it
            is unset).
        broker_check: With ``readiness``: a blocking check of the broker (``None`` = it
            answered, else why not), run off the event loop every
            :data:`BROKER_CHECK_INTERVAL_S`; its result goes to ``Readiness.broker``.

    Returns:
        The app, ready for ``faust.Worker(app, ...)``; its agents crash the worker on any
        unexpected error.

    Raises:
        ConfigError: ``PORTRAIT_KAFKA__BOOTSTRAP_SERVERS`` is empty.
        ModelLoadError: ``classifier`` is ``None`` and the model cannot be loaded.
        DeviceUnavailableError: ``classifier`` is ``None`` and CUDA is asked for but unavailable.
    """
    servers = require_bootstrap_servers(settings)
    if classifier is None:
        classifier = load_configured_model(settings.model)
    metrics = Metrics(registry if registry is not None else CollectorRegistry())
    device = getattr(classifier, "device", "cuda" if "CUDA" in classifier.provider else "cpu")
    metrics.set_model_info(classifier.model_version, classifier.provider, device,
                           requested_device=settings.model.device)  # fmt: skip
    topics = settings.topics
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{server}" for server in servers],
        broker_credentials=_credentials(settings.kafka),
        store="rocksdb://",
        datadir=str(settings.state_dir),
        autodiscover=False,
        web_enabled=False,
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.kafka.session_timeout_s,
        broker_heartbeat_interval=settings.kafka.heartbeat_interval_s,
        topic_partitions=topics.partitions,
        topic_replication_factor=topics.replication_factor,
        topic_disable_leader=True,
        # The check compares the offset persisted in RocksDB with the changelog's highwater from
        # ListOffsets; Tansu reports the last *batch's* base offset + 1 there (ENVIRONMENT.md,
        # broker fault 1), so a clean restart would crash with ConsistencyError. Without it, a
        # persisted offset past the highwater just means there is nothing to replay.
        recovery_consistency_check=False,
    )
    app.transport = SeekFirstTransport(app.conf.broker_consumer, app)  # SeekFirstConsumer
    n = topics.partitions
    repartition = settings.repartition_topics()  # source -> repartition topic, read with it
    comments = _raw_topic(app, *_with_repartition(topics.comments, repartition), partitions=n)
    behavior = _raw_topic(app, *_with_repartition(topics.behavior, repartition), partitions=n)
    updates = _raw_topic(app, topics.profile_updates, partitions=n)
    dead_letter = _raw_topic(app, topics.dead_letter, partitions=n)
    erasure = _raw_topic(app, topics.erasure, partitions=n)
    rerouted = {source: _raw_topic(app, name, partitions=n) for source, name in repartition.items()}
    if segments is None:
        segments = compiled_segments(settings)
    segment_topic = _raw_topic(app, topics.segment_events, partitions=n) if segments else None
    evaluator = None
    if segments:

        def publish(totals: dict[str, int]) -> None:
            for name, members in totals.items():
                metrics.segment_members.labels(segment=name).set(members)

        names = [segment.definition.name for segment in segments]
        evaluator = SegmentEvaluator(
            segments, lambda name: metrics.segment_errors.labels(segment=name).inc(),
            SegmentMembers(names, publish),
            lambda t: metrics.count_segment_transition(t.segment, t.transition),
        )  # fmt: skip
    table = app.Table(TABLE_NAME, partitions=topics.partitions, key_type=bytes,
                      help="Profile.to_dict() per user id")  # fmt: skip
    ledger = app.Table(ERASURE_LEDGER_NAME, partitions=topics.partitions, key_type=bytes,
                       help="erasure requests carried out, by request id")  # fmt: skip
    if executor is None:
        executor = _owned_executor(app)
    labels = _raw_topic(app, topics.labels, partitions=n)
    sink = TopicSink(updates, dead_letter, rerouted, segment_topic, labels)
    store = TableProfileStore(table)
    outputs = Outputs(store, sink, metrics)
    pseudonymise = Pseudonymiser(settings.pseudonymisation)
    partitions = topics.partitions  # a record off its key's partition: re-routed or dead-lettered
    comment_path = CommentProcessor(
        outputs, classifier, profile_settings=settings.profile, executor=executor,
        mixed=settings.mixed, log_user_ids=settings.log_user_ids, pseudonymise=pseudonymise,
        partitions=partitions, reroute_from=set(repartition) & {topics.comments},
        segments=evaluator,
    )  # fmt: skip
    behavior_path = BehaviorProcessor(
        outputs, profile_settings=settings.profile, model_version=classifier.model_version,
        log_user_ids=settings.log_user_ids, pseudonymise=pseudonymise, partitions=partitions,
        reroute_from=set(repartition) & {topics.behavior}, segments=evaluator,
    )  # fmt: skip
    erasure_path = ErasureProcessor(outputs, TableErasureLedger(ledger), pseudonymise=pseudonymise,
                                    partitions=partitions)  # fmt: skip

    async def comment_agent(stream: Any) -> None:
        await consume_in_batches(stream, comment_path.process, settings.batch)

    async def behavior_agent(stream: Any) -> None:
        await consume_in_batches(stream, behavior_path.process, settings.batch)

    app.agent(comments, name="portrait.comments", supervisor_strategy=CrashingSupervisor)(
        comment_agent
    )
    app.agent(behavior, name="portrait.behavior", supervisor_strategy=CrashingSupervisor)(
        behavior_agent
    )

    async def erasure_agent(stream: Any) -> None:
        await consume_in_batches(stream, erasure_path.process, settings.batch)

    app.agent(erasure, name="portrait.erasure", supervisor_strategy=CrashingSupervisor)(
        erasure_agent
    )
    if evaluator is not None:
        ticks = _raw_topic(app, settings.segment_ticks_topic(), partitions=n)
        sweep = SegmentSweep(outputs, store, evaluator, model_version=classifier.model_version)

        async def sweep_agent(stream: Any) -> None:
            await consume_in_batches(stream, sweep.process, settings.batch)

        app.agent(ticks, name="portrait.segment_sweep", supervisor_strategy=CrashingSupervisor)(
            sweep_agent
        )
        send_ticks(app, ticks, settings.segments.reevaluate_interval_s, evaluator.members)

    sources = (topics.comments, topics.behavior, *repartition.values())

    async def measure_lag() -> None:  # offsets faust's monitor already tracks: no broker request
        metrics.set_consumer_lag(app.monitor.tp_end_offsets, app.monitor.tp_committed_offsets,
                                 sources)  # fmt: skip

    app.timer(interval=LAG_INTERVAL_S, name="portrait.consumer_lag")(measure_lag)
    markers = MarkerCommitter((*sources, topics.erasure))

    async def commit_past_markers() -> None:
        await markers.tick(app.consumer, app.monitor)

    app.timer(interval=MARKER_INTERVAL_S, name="portrait.markers")(commit_past_markers)
    model = settings.model
    if model.registry is not None:

        def swap(new: Any) -> None:
            comment_path.swap_model(new)
            behavior_path.set_model_version(new.model_version)
            metrics.set_model_info(new.model_version, new.provider, device,
                                   requested_device=model.device)  # fmt: skip

        shadow_thread = _owned_executor(app, "portrait-shadow")

        def shadow(candidate: Any) -> None:
            comment_path.shadow = None if candidate is None else ShadowScorer(
                candidate, metrics, model.shadow_events, shadow_thread,
                model.shadow_share)  # fmt: skip

        follow_registry(app, Registry(model.registry), classifier.model_version,
                        lambda path: load_model(path, model.device, model.intra_op_threads),
                        swap, metrics, shadow if model.shadow_events > 0 else None)  # fmt: skip
    log_progress(app, metrics, sources)
    logger.info(
        "app built app_id=%s model_version=%s provider=%s device=%s partitions=%d "
        "max_batch_size=%d max_wait_s=%s",
        settings.app_id, classifier.model_version, classifier.provider, device, topics.partitions,
        settings.batch.max_batch_size, settings.batch.max_wait_s,
    )  # fmt: skip
    if readiness is not None:
        track_readiness(app, readiness)
        if broker_check is not None:
            watch_broker(app, readiness, broker_check)
    return app
