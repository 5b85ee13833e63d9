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

The agents are thin glue: the work is :class:`stream.processing.BatchProcessor`.

Acknowledgement and commit: the agents iterate ``stream.noack()``, so faust acks nothing by itself.
A micro-batch's events are acked only after ``BatchProcessor`` returned, i.e. after the batch's
profiles were written to the table (local RocksDB at once, changelog enqueued on the producer) and
the broker confirmed its profile updates and dead-letter records. faust's commit task (every
``broker_commit_interval``, 2.8 s) flushes the producer, so the changelog records are written, and
then commits per partition the offset after the last *contiguous* acked event. An exception in an
agent stops the whole worker (``CrashingSupervisor``) with the batch unacked: on restart Kafka
delivers it again and the profiles skip what they had already applied (offsets in the profile).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import aclosing, contextmanager
from typing import Any

import faust
from faust.streams import _current_event  # see _bound_to()
from faust.transport.drivers import aiokafka as faust_aiokafka
from mode import CrashingSupervisor
from prometheus_client import CollectorRegistry

from models.contract.errors import ConfigError
from models.contract.protocol import Classifier
from models.contract.routing import load_model
from stream.batching import MicroBatch, micro_batches
from stream.metrics import Metrics
from stream.privacy import Pseudonymiser
from stream.processing import BatchProcessor, BatchResult, SourceRecord
from stream.settings import BatchSettings, KafkaSettings, Settings

__all__ = [
    "ERASURE_LEDGER_NAME",
    "LAG_INTERVAL_S",
    "TABLE_NAME",
    "TableErasureLedger",
    "TableProfileStore",
    "TopicSink",
    "changelog_topic_name",
    "consume_in_batches",
    "create_app",
    "record_from_event",
    "require_bootstrap_servers",
]

logger = logging.getLogger(__name__)

LAG_INTERVAL_S = 5.0
"""Seconds between updates of ``portrait_consumer_lag_events``."""

TABLE_NAME = "profiles"
"""Name of the profile table; its changelog topic is ``<app_id>-profiles-changelog``."""

ERASURE_LEDGER_NAME = "erasures"
"""Name of the erasure-ledger table (changelog ``<app_id>-erasures-changelog``)."""


def changelog_topic_name(app_id: str) -> str:
    """The changelog topic faust uses for the profile table of app ``app_id``."""
    return f"{app_id}-{TABLE_NAME}-changelog"


@contextmanager
def _bound_to(event: Any) -> Iterator[None]:
    """Make ``event`` faust's current event while reading or writing the table.

    faust picks a table key's partition (its RocksDB file and changelog partition) from the
    current-event context variable, which it sets only while a stream is being iterated. Batches
    are processed after the iteration, so each read and write binds the event it belongs to; the
    table is co-partitioned with the source topics, so that is the user's partition. This uses
    faust-streaming's private ``faust.streams._current_event`` (pinned to 0.15.x).
    """
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


class TableProfileStore:
    """:class:`stream.processing.ProfileStore` on a faust table keyed by UTF-8 user id bytes.

    Args:
        table: The faust table (values are ``Profile.to_dict()`` JSON dicts).
    """

    def __init__(self, table: Any) -> None:
        self._table = table

    def load(self, user_id: str, record: SourceRecord) -> dict[str, Any] | None:
        """The stored profile state of ``user_id`` in ``record``'s partition, or ``None``."""
        with _bound_to(record.handle):
            state = self._table.get(user_id.encode("utf-8"))
        return dict(state) if state is not None else None

    def save(self, user_id: str, state: dict[str, Any], record: SourceRecord) -> None:
        """Write ``state`` (RocksDB now, changelog record enqueued on the producer)."""
        with _bound_to(record.handle):
            self._table[user_id.encode("utf-8")] = state

    def delete(self, user_id: str, record: SourceRecord) -> None:
        """Delete ``user_id`` (RocksDB now, changelog tombstone enqueued), present or not."""
        with _bound_to(record.handle):
            del self._table[user_id.encode("utf-8")]


class TableErasureLedger:
    """:class:`stream.processing.ErasureLedger` on a faust table keyed by request id bytes.

    Co-partitioned like the profile table (the request's partition is the user's), so a request
    is checked and recorded in the partition whose worker carries it out. Values hold the
    request's source offset only, no user id; one entry per erasure ever requested.

    Args:
        table: The faust table.
    """

    def __init__(self, table: Any) -> None:
        self._table = table

    def contains(self, request_id: str, record: SourceRecord) -> bool:
        """Whether the request was carried out already."""
        with _bound_to(record.handle):
            return request_id.encode("utf-8") in self._table

    def add(self, request_id: str, record: SourceRecord) -> None:
        """Record the request as carried out (RocksDB now, changelog record enqueued)."""
        with _bound_to(record.handle):
            self._table[request_id.encode("utf-8")] = {"offset": record.offset}


class TopicSink:
    """:class:`stream.processing.Sink` on two raw-bytes faust topics (``send_soon``: in order).

    Args:
        profile_updates: The profile-update topic.
        dead_letter: The dead-letter topic.
    """

    def __init__(self, profile_updates: Any, dead_letter: Any) -> None:
        self._updates = profile_updates
        self._dead_letter = dead_letter

    def send_profile_update(self, user_id: str, value: bytes) -> Awaitable[object]:
        """Enqueue a profile update keyed by ``user_id``; await it for the broker's confirmation."""
        fut: Awaitable[object] = self._updates.send_soon(key=user_id.encode("utf-8"), value=value)
        return fut

    def send_tombstone(self, user_id: str) -> Awaitable[object]:
        """Enqueue a null-value record keyed by ``user_id`` on the profile-update topic."""
        fut: Awaitable[object] = self._updates.send_soon(key=user_id.encode("utf-8"), value=None)
        return fut

    def send_dead_letter(
        self, record: SourceRecord, headers: Sequence[tuple[str, bytes]]
    ) -> Awaitable[object]:
        """Enqueue ``record``'s original key and value with ``headers``; await to confirm."""
        fut: Awaitable[object] = self._dead_letter.send_soon(
            key=record.key, value=record.value, headers=list(headers)
        )
        return fut


def record_from_event(event: Any) -> SourceRecord:
    """A :class:`SourceRecord` of a faust event read from a raw-bytes topic."""
    message = event.message
    headers = message.headers or ()
    if hasattr(headers, "items"):
        headers = headers.items()
    return SourceRecord(
        topic=message.topic, partition=message.partition, offset=message.offset,
        key=message.key, value=message.value,
        headers=tuple((str(name), bytes(value or b"")) for name, value in headers),
        timestamp_s=message.timestamp, handle=event,
    )  # fmt: skip


async def consume_in_batches(
    stream: Any,
    process: Callable[[MicroBatch[SourceRecord]], Awaitable[BatchResult]],
    batch: BatchSettings,
) -> None:
    """The body of both agents: micro-batch, process, then ack the batch's events.

    Args:
        stream: The agent's faust stream.
        process: ``BatchProcessor.process_comments`` or ``process_behaviors``.
        batch: Micro-batch limits.

    Raises:
        Exception: Whatever ``process`` raises; the batch stays unacked and the worker stops.
    """
    source = stream.noack()
    batches = micro_batches(source.events(), max_batch_size=batch.max_batch_size,
                            max_wait_s=batch.max_wait_s)  # fmt: skip
    async with aclosing(batches) as micro:
        async for events in micro:
            records = tuple(record_from_event(event) for event in events.items)
            await process(MicroBatch(records, events.wait_s))
            for event in events.items:
                await source.ack(event)


def uncommitted_source_partitions(
    committed: Mapping[Any, int | None], is_changelog: Callable[[Any], bool]
) -> list[Any]:
    """The source partitions that the group never committed an offset for.

    Args:
        committed: What ``seek_to_committed`` returned: partition -> committed offset, ``None``
            (or 0) where the group has none.
        is_changelog: Whether a partition belongs to a table's changelog topic (recovery
            positions those itself).

    Returns:
        The partitions to rewind to their first offset, in the order given.
    """
    return [tp for tp, offset in committed.items() if not offset and not is_changelog(tp)]


class SeekFirstConsumer(faust_aiokafka.Consumer):
    """faust's aiokafka consumer, with the seek after a rebalance made atomic for the streams.

    After a rebalance faust recovers the tables, then resumes the source partitions and only
    then seeks them to their committed offsets (one OffsetFetch per partition). Records that
    aiokafka had read ahead were handed to the agents in between, and read again after the
    seek: faust's read-offset filter and its acknowledged-offset list assume each offset
    arrives once, so the restarted worker dropped runs of records (profiles left behind) and
    its offset commits stalled (faust-streaming 0.15.3; 2 of 55 kill -9 trials and 3 CI runs,
    docs/reliability.md). Here the partitions faust resumed stay paused until the seek is done,
    and a partition without a committed offset is rewound to its first offset (what
    ``consumer_auto_offset_reset="earliest"`` means) instead of being left where the fetcher
    had read ahead to.
    """

    async def perform_seek(self) -> None:
        """Seek the source partitions to their committed offsets before they deliver again."""
        resumed = {tp for tp in self._get_active_partitions() if not self._is_changelog_tp(tp)}
        self.pause_partitions(resumed)
        try:
            await super().perform_seek()
        finally:
            self.resume_partitions(resumed)

    async def seek_to_committed(self) -> Mapping[Any, int]:
        """Seek every assigned partition to its committed offset, and a source partition without
        one to offset 0 (aiokafka resets an offset out of range to the first one).

        Returns:
            Partition -> committed offset (``None`` where there is none), as faust's returns it.
        """
        committed = await super().seek_to_committed()
        rewind = uncommitted_source_partitions(committed, self._is_changelog_tp)
        for tp in rewind:  # no broker round trip here: the seek stays synchronous
            self._thread.seek(tp, 0)
        if rewind:
            logger.info("no committed offset: reading from the first offset partitions=%s",
                        sorted(f"{tp.topic}[{tp.partition}]" for tp in rewind))  # fmt: skip
        return committed


class _Transport(faust_aiokafka.Transport):
    Consumer = SeekFirstConsumer


def _raw_topic(app: faust.App, name: str, partitions: int) -> faust.TopicT:
    """A topic whose keys and values are bytes, untouched by faust (no codec)."""
    return app.topic(
        name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
        partitions=partitions,
    )  # fmt: skip


def _owned_executor(app: faust.App) -> Executor:
    """A 1-thread inference executor, shut down when the app stops."""
    executor = ThreadPoolExecutor(1, thread_name_prefix="portrait-inference")

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
            "PORTRAIT_KAFKA__BOOTSTRAP_SERVERS: the worker needs the Kafka bootstrap servers, "
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
) -> faust.App:
    """Build the Portrait faust app: topics, the profile table and the three agents.

    Args:
        settings: All settings (bootstrap servers are required).
        classifier: The sentiment model; ``None`` loads it from ``settings.model``.
        registry: Prometheus registry for the metrics; ``None`` = a new private one.
        executor: Runs inference off the event loop; ``None`` = a new 1-thread executor.

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
        model = settings.model
        classifier = load_model(model.path, model.device, model.intra_op_threads)
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
    app.transport = _Transport(app.conf.broker_consumer, app)  # SeekFirstConsumer
    comments = _raw_topic(app, topics.comments, topics.partitions)
    behavior = _raw_topic(app, topics.behavior, topics.partitions)
    updates = _raw_topic(app, topics.profile_updates, topics.partitions)
    dead_letter = _raw_topic(app, topics.dead_letter, topics.partitions)
    erasure = _raw_topic(app, topics.erasure, topics.partitions)
    table = app.Table(TABLE_NAME, partitions=topics.partitions, key_type=bytes,
                      help="Profile.to_dict() per user id")  # fmt: skip
    ledger = app.Table(ERASURE_LEDGER_NAME, partitions=topics.partitions, key_type=bytes,
                       help="erasure requests carried out, by request id")  # fmt: skip
    if executor is None:
        executor = _owned_executor(app)
    processor = BatchProcessor(
        profile_settings=settings.profile, store=TableProfileStore(table),
        sink=TopicSink(updates, dead_letter), metrics=metrics,
        model_version=classifier.model_version, classifier=classifier,
        executor=executor,
        log_user_ids=settings.log_user_ids,
        pseudonymise=Pseudonymiser(settings.pseudonymisation),
        ledger=TableErasureLedger(ledger), mixed=settings.mixed,
    )  # fmt: skip

    async def comment_agent(stream: Any) -> None:
        await consume_in_batches(stream, processor.process_comments, settings.batch)

    async def behavior_agent(stream: Any) -> None:
        await consume_in_batches(stream, processor.process_behaviors, settings.batch)

    app.agent(comments, name="portrait.comments", supervisor_strategy=CrashingSupervisor)(
        comment_agent
    )
    app.agent(behavior, name="portrait.behavior", supervisor_strategy=CrashingSupervisor)(
        behavior_agent
    )

    async def erasure_agent(stream: Any) -> None:
        await consume_in_batches(stream, processor.process_erasures, settings.batch)

    app.agent(erasure, name="portrait.erasure", supervisor_strategy=CrashingSupervisor)(
        erasure_agent
    )

    async def measure_lag() -> None:  # offsets faust's monitor already tracks: no broker request
        metrics.set_consumer_lag(app.monitor.tp_end_offsets, app.monitor.tp_committed_offsets,
                                 (topics.comments, topics.behavior))  # fmt: skip

    app.timer(interval=LAG_INTERVAL_S, name="portrait.consumer_lag")(measure_lag)
    logger.info(
        "app built app_id=%s model_version=%s provider=%s device=%s partitions=%d "
        "max_batch_size=%d max_wait_s=%s",
        settings.app_id, classifier.model_version, classifier.provider, device, topics.partitions,
        settings.batch.max_batch_size, settings.batch.max_wait_s,
    )  # fmt: skip
    return app
