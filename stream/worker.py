"""Running the worker (``portrait worker``): checks at start, topics, metrics, the faust worker.

:func:`run_worker` does, in order:

1. Refuse to start without bootstrap servers or when another process holds the state directory
   (:func:`lock_state_dir`): :class:`~models.contract.errors.ConfigError`, naming the setting.
2. Load the model (:class:`~models.contract.errors.ModelLoadError`,
   :class:`~models.contract.errors.DeviceUnavailableError`: CUDA asked for but unusable) and log the
   onnxruntime provider in use.
3. Start the Prometheus endpoint on ``settings.metrics_port`` (a port that cannot be bound is a
   :class:`~models.contract.errors.ConfigError` naming ``PORTRAIT_METRICS_PORT``), then wait for
   the broker, retrying with capped exponential backoff and one log line per attempt.
4. Create the missing topics (comments, behaviour, erasure, profile updates, dead letters) with
   ``settings.topics.partitions`` partitions, and check that the source topics and an existing
   changelog have that many (the profile table is co-partitioned with them).
5. Run the faust worker in this process, web server disabled (faust's default would bind
   0.0.0.0:6066), until SIGTERM/SIGINT: faust then waits for in-flight micro-batches to be
   acked, commits and exits.

The app itself is built by :func:`stream.app.create_app`, re-exported here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from filelock import BaseFileLock, FileLock, Timeout
from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector

from models.contract.errors import BrokerUnavailableError, ConfigError
from models.contract.protocol import Classifier
from stream.app import changelog_topic_name, create_app, require_bootstrap_servers
from stream.broker_wait import check_broker, client_options, wait_for_broker_with_backoff
from stream.health import HealthServer, Readiness, start_health_server
from stream.kafka_admin import create_topics, describe_topic_configs
from stream.labels import LABELS_CONFIG
from stream.logs import rate_limit_noisy_loggers
from stream.model_registry import load_configured_model
from stream.segment_definitions import compiled_segments
from stream.settings import Settings

__all__ = [
    "DEAD_LETTER_CONFIG",
    "REPARTITION_CONFIG",
    "SEGMENT_TICKS_CONFIG",
    "LOCK_FILE",
    "PROFILE_UPDATES_CONFIG",
    "compaction_problem",
    "create_app",
    "ensure_topics",
    "lock_state_dir",
    "require_bootstrap_servers",
    "run_worker",
    "wait_for_broker_with_backoff",
]

logger = logging.getLogger(__name__)

_FAUST_LOG_LEVELS = {"debug": "debug", "info": "info", "warn": "warn", "error": "error"}
PROFILE_UPDATES_CONFIG = {"cleanup.policy": "compact"}
"""Configs of a profile-updates topic the worker creates: the latest update (or an erasure's
tombstone) per user key is what Kafka keeps."""

DEAD_LETTER_CONFIG = {"retention.ms": str(14 * 24 * 3600 * 1000)}
"""Configs of a dead-letter topic the worker creates: 14 days, time to look and replay."""

REPARTITION_CONFIG = {"retention.ms": str(7 * 24 * 3600 * 1000)}
"""Configs of a repartition topic the worker creates: 7 days, as long as the source topics'
default retention (a re-routed event is profiled within seconds; the rest is slack for outages)."""

SEGMENT_TICKS_CONFIG = {"retention.ms": str(24 * 3600 * 1000)}
"""Configs of the segment-ticks topic the worker creates: 1 day (a tick matters for minutes)."""

LOCK_FILE = ".portrait-worker.lock"
"""Held (an OS file lock) by the worker process that owns the state directory."""

_PID_FILE = ".portrait-worker.pid"


def _partition_counts(settings: Settings, names: list[str]) -> dict[str, int]:
    """Partitions per existing topic among ``names`` (missing topics are left out)."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(bootstrap_servers=require_bootstrap_servers(settings),
                                 **client_options(settings))  # fmt: skip
    except KafkaError as exc:
        raise BrokerUnavailableError(f"cannot reach the Kafka broker: {exc}") from exc
    try:
        described = admin.describe_topics(names)
    finally:
        admin.close()
    counts = {}
    for name, info in zip(names, described, strict=True):
        if not info.get("error_code") and info.get("partitions"):
            counts[info.get("topic") or info.get("name") or name] = len(info["partitions"])
    return counts


def ensure_topics(settings: Settings) -> list[str]:
    """Create the worker's missing topics and check the partition counts of the co-partitioned ones.

    Args:
        settings: Topic names, partitions and replication factor.

    New topics get the configs they need: :data:`PROFILE_UPDATES_CONFIG` (compacted, so an erased
    user's old profile updates are purged once the tombstone is compacted in) and
    :data:`DEAD_LETTER_CONFIG`, as ``ops/kafka/create-topics.sh`` creates them, and the
    repartition topics :data:`REPARTITION_CONFIG` (``PORTRAIT_TOPICS__WRONG_PARTITION=reroute``).
    An existing
    profile-updates topic is checked (:func:`compaction_problem`); one that is not compacted gets a
    warning with the command that fixes it, or stops the start-up under
    ``PORTRAIT_TOPICS__REQUIRE_COMPACTION=true``.

    Returns:
        The topics this call created.

    Raises:
        ConfigError: A source topic or the table's changelog topic exists with a partition count
            other than ``PORTRAIT_TOPICS__PARTITIONS``.
        BrokerUnavailableError: The broker cannot be reached or refused to create a topic.
    """
    topics = settings.topics
    servers = require_bootstrap_servers(settings)
    created: list[str] = []
    for names, configs in (
        ([topics.comments, topics.behavior, topics.erasure], {}),
        ([topics.profile_updates], PROFILE_UPDATES_CONFIG),
        ([topics.dead_letter], DEAD_LETTER_CONFIG),
        ([topics.labels], LABELS_CONFIG),
        (list(settings.repartition_topics().values()), REPARTITION_CONFIG),
        ([topics.segment_events] if settings.segments.path is not None else [], {}),
        (
            [settings.segment_ticks_topic()] if settings.segments.path is not None else [],
            SEGMENT_TICKS_CONFIG,
        ),
    ):
        created += create_topics(servers, names, topics.partitions, topics.replication_factor,
                                 configs, **client_options(settings))  # fmt: skip
    if topics.profile_updates not in created:
        _check_compaction(settings)
    ticks = [settings.segment_ticks_topic()] if settings.segments.path is not None else []
    co_partitioned = [topics.comments, topics.behavior, topics.erasure, *ticks,
                      *settings.repartition_topics().values(),
                      changelog_topic_name(settings.app_id)]  # fmt: skip
    counts = _partition_counts(settings, co_partitioned)
    wrong = {name: n for name, n in counts.items() if n != topics.partitions}
    if wrong:
        found = ", ".join(f"{name} has {n}" for name, n in sorted(wrong.items()))
        raise ConfigError(
            f"PORTRAIT_TOPICS__PARTITIONS: is {topics.partitions} but {found} partitions; the "
            "profile table is co-partitioned with the source topics, so set it to their partition "
            "count (and use a new PORTRAIT_APP_ID if the changelog differs)",
            env_vars=["PORTRAIT_TOPICS__PARTITIONS"],
        )
    return created


def compaction_problem(topic: str, reported: Mapping[str, str], bootstrap: str) -> str | None:
    """Why an existing profile-updates topic falls short, with the fix; ``None`` when it does not.

    Args:
        topic: The profile-updates topic.
        reported: Its configs as the broker describes them (may be empty: not every
            Kafka-protocol broker reports them; the local Tansu does not).
        bootstrap: Broker address for the fix command.
    """
    policy = reported.get("cleanup.policy")
    if policy is None or "compact" in policy.split(","):
        return None
    return (
        f"{topic} has cleanup.policy={policy}: an erased user's earlier profile updates stay on it "
        f"until retention; fix with `kafka-configs.sh --bootstrap-server {bootstrap} --alter "
        f"--entity-type topics --entity-name {topic} --add-config cleanup.policy=compact`"
    )


def _check_compaction(settings: Settings) -> None:
    """Warn, or refuse under ``PORTRAIT_TOPICS__REQUIRE_COMPACTION``, when the existing
    profile-updates topic is not compacted (see ensure_topics).

    Raises:
        ConfigError: Not compacted, and compaction is required.
    """
    topic = settings.topics.profile_updates
    try:
        reported = describe_topic_configs(
            require_bootstrap_servers(settings), topic, **client_options(settings)
        )
    except BrokerUnavailableError as exc:
        logger.info("cannot check the configs of topic=%s: %s", topic, exc)
        return
    if not reported:
        log = logger.warning if settings.topics.require_compaction else logger.info
        log("the broker reports no configs for topic=%s; compaction not checked", topic)
    problem = compaction_problem(topic, reported, settings.kafka.bootstrap_servers)
    if problem and settings.topics.require_compaction:
        raise ConfigError(
            f"{problem}; or set PORTRAIT_TOPICS__REQUIRE_COMPACTION=false to start anyway",
            env_vars=["PORTRAIT_TOPICS__REQUIRE_COMPACTION"],
        )
    if problem:
        logger.warning("%s", problem)


def lock_state_dir(state_dir: Path) -> BaseFileLock:
    """Take the state directory for this process, or refuse at once.

    RocksDB allows one process per database: a second worker on the same directory would join the
    consumer group, take partitions whose files the first still holds and crash after retrying
    (rocksdict/RocksDict#93). The lock is an OS file lock (``filelock``), released by the OS when
    the process ends, ``kill -9`` included.

    Args:
        state_dir: ``PORTRAIT_STATE_DIR``; created if missing.

    Returns:
        The held lock (keep a reference for the life of the worker).

    Raises:
        ConfigError: Another process holds the directory; the message gives its pid.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(state_dir / LOCK_FILE)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        holder = (
            (state_dir / _PID_FILE).read_text().strip()
            if (state_dir / _PID_FILE).is_file()
            else "?"
        )
        raise ConfigError(
            f"PORTRAIT_STATE_DIR={state_dir} is in use by another worker process (pid {holder}); "
            "give each worker process its own PORTRAIT_STATE_DIR",
            env_vars=("PORTRAIT_STATE_DIR",),
        ) from None
    (state_dir / _PID_FILE).write_text(f"{os.getpid()}\n")
    return lock


def _health_server_or_config_error(
    settings: Settings, registry: CollectorRegistry, readiness: Readiness
) -> HealthServer | None:
    """Start the metrics and health endpoint; a port that cannot be bound is a setting to change."""
    try:
        return start_health_server(settings.metrics_port, registry, readiness)
    except OSError as exc:
        raise ConfigError(
            f"PORTRAIT_METRICS_PORT={settings.metrics_port} cannot be bound "
            f"({exc.strerror or exc}); choose a free port, or 0 for no metrics server",
            env_vars=("PORTRAIT_METRICS_PORT",),
        ) from exc


def run_worker(settings: Settings, classifier: Classifier | None = None) -> None:
    """Run the worker in this process until SIGTERM/SIGINT (see the module docstring).

    Args:
        settings: All settings, built once by the caller.
        classifier: A loaded model; ``None`` loads it from ``settings.model``.

    Raises:
        ConfigError: No bootstrap servers, the state directory held by another process, the
            metrics port taken, or topics with the wrong partition count.
        ModelLoadError: The model cannot be loaded; the message says how to fix it.
        DeviceUnavailableError: ``PORTRAIT_MODEL__DEVICE=cuda`` but CUDA cannot be used.
        BrokerUnavailableError: The broker refused to create a topic.
        SystemExit: Raised by faust when the worker stops (code 0 after a signal).
        Exception: An agent crashed (the worker stopped; unacked events are delivered again on
            restart).
    """
    import faust

    require_bootstrap_servers(settings)
    segments = compiled_segments(settings)  # a bad definition stops the start-up here
    rate_limit_noisy_loggers()
    state_lock = lock_state_dir(settings.state_dir)
    server, executor = None, None
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)  # process_cpu_seconds_total, process_resident_memory_bytes
    PlatformCollector(registry=registry)  # python_info
    readiness = Readiness(registry)
    try:
        if classifier is None:
            classifier = load_configured_model(settings.model)
        server = _health_server_or_config_error(settings, registry, readiness)
        readiness.not_ready("waiting for the broker")
        logger.info("model ready model_version=%s provider=%s", classifier.model_version,
                    classifier.provider)  # fmt: skip
        wait_for_broker_with_backoff(settings, on_result=readiness.broker)
        created = ensure_topics(settings)
        logger.info("topics ready created=%s partitions=%d", created, settings.topics.partitions)
        readiness.not_ready("starting")
        executor = ThreadPoolExecutor(1, thread_name_prefix="portrait-inference")
        app = create_app(settings, classifier, registry, executor, readiness,
                         broker_check=lambda: check_broker(settings),
                         segments=segments)  # fmt: skip
        worker = faust.Worker(
            app, loglevel=_FAUST_LOG_LEVELS[settings.log_level], quiet=True,
            redirect_stdouts=False,
        )  # fmt: skip
        worker.execute_from_commandline()
    finally:
        readiness.not_ready("stopping")
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
        if server is not None:
            server.close()
        state_lock.release()
