"""Measurements (c), (d) and latency: the real worker on the real broker, watched from outside.

Each :class:`BenchWorker` is ``portrait worker`` in its own process
(:class:`~stream.tools.worker_process.WorkerProcess`) with its own app id, topics and RocksDB state
directory, so several configurations can be up at once and none sees another's events. The bench
process produces comment events to the worker's source topic (kafka-python, key = user id) and an
:class:`UpdateRecorder` thread reads the worker's profile-update topic.

- Burst (c, d, the batch-size sweep): every record is sent as fast as the producer takes it;
  throughput = events / (receipt time of the profile update that accounts for the last event -
  wall time just before the first send).
- Open loop (latency): records are sent at a fixed rate whatever the worker does (the sender never
  waits for the worker); per event, latency = receipt time of the first profile update of its user
  whose ``applied_offsets`` reach the event's offset - the wall time the producer sent it.

Every phase uses user ids of its own (a tag prefixed to the simulated user ids), so the events a
phase accounts for are exactly the comments in its users' latest profiles.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.contract.errors import PortraitError
from stream.publish import ReplayRecord, make_producer, publish
from stream.settings import Settings
from stream.tools.bench.stats import nearest_rank
from stream.tools.broker import create_topics, kafka_client_config
from stream.tools.follow import assign_all, iter_records
from stream.tools.replay import records_from_events
from stream.tools.worker_process import WORKER_COMMAND, WorkerProcess

__all__ = [
    "BenchError",
    "BenchWorker",
    "LatencyResult",
    "UpdateRecorder",
    "WorkerConfig",
    "tagged_records",
]

logger = logging.getLogger(__name__)

_FETCH_MAX_WAIT_MS = 20  # the recorder's fetch wait bounds the receipt delay it adds
_POLL_S = 0.02


class BenchError(PortraitError):
    """A bench phase could not finish (worker too slow or stuck); the message names the phase."""


@dataclass(frozen=True)
class WorkerConfig:
    """The worker settings a bench configuration varies.

    Attributes:
        name: Short name, used in topic names and the results (e.g. ``"c-t1"``).
        max_batch_size: ``PORTRAIT_BATCH__MAX_BATCH_SIZE``.
        max_wait_s: ``PORTRAIT_BATCH__MAX_WAIT_S``.
        intra_op_threads: ``PORTRAIT_MODEL__INTRA_OP_THREADS``.
        segments_path: ``PORTRAIT_SEGMENTS__PATH`` (``None``: no segments).
        registry: ``PORTRAIT_MODEL__REGISTRY`` (``None``: the bench's model directory); a
            registry's staged candidate is scored in shadow for every comment the bench sends.
    """

    name: str
    max_batch_size: int
    max_wait_s: float
    intra_op_threads: int
    segments_path: Path | None = None
    registry: Path | None = None

    def describe(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict."""
        described: dict[str, Any] = {
            "max_batch_size": self.max_batch_size, "max_wait_s": self.max_wait_s,
            "intra_op_threads": self.intra_op_threads,
        }  # fmt: skip
        if self.segments_path is not None:
            described["segments_path"] = str(self.segments_path)
        if self.registry is not None:
            described["registry"] = str(self.registry)
        return described


@dataclass(frozen=True)
class LatencyResult:
    """One open-loop run.

    Attributes:
        offered_rate_per_s: The send rate asked for, events/s.
        sent_rate_per_s: The send rate achieved, events/s.
        events: Events sent.
        latency_s: ``{"p50", "p95", "p99", "max"}``, seconds, per event.
        drain_s: Seconds from the last send until the last event was accounted for.
    """

    offered_rate_per_s: float
    sent_rate_per_s: float
    events: int
    latency_s: dict[str, float]
    drain_s: float


@dataclass(frozen=True, slots=True)
class _Phase:
    """Wall times (epoch s) of one send-and-wait: first send, last send acknowledged, done."""

    started_s: float
    sent_s: float
    done_s: float
    sent_rate_per_s: float


@dataclass(frozen=True, slots=True)
class _Sent:
    user_id: str
    partition_key: str  # "topic:partition", as in Profile.applied_offsets
    offset: int
    sent_s: float


def tagged_records(
    events: Sequence[Mapping[str, Any]], tag: str, settings: Settings, count: int
) -> list[ReplayRecord]:
    """``count`` records of ``events`` (cycled), each user id prefixed with a phase tag.

    Args:
        events: Comment event dicts (``user_id``, ``text``, ...).
        tag: Phase tag; cycle ``k`` of the events gets users ``"<tag>.<k>.<user_id>"``.
        settings: The worker's settings (its comments topic).
        count: Records wanted, >= 1.

    Returns:
        The records, keyed by the tagged user id, for the worker's comments topic.

    Raises:
        ValueError: ``events`` is empty or ``count`` < 1.
    """
    if not events or count < 1:
        raise ValueError("need at least one event and count >= 1")
    chosen = []
    for index in range(count):
        cycle, event = divmod(index, len(events))
        chosen.append({**events[event], "user_id": f"{tag}.{cycle}.{events[event]['user_id']}"})
    return list(records_from_events(chosen, settings.topics))


class UpdateRecorder(threading.Thread):
    """Reads a profile-update topic in the background: when each user's updates arrived.

    Args:
        client_config: kafka-python connection options (``kafka_client_config``).
        topic: The profile-update topic (must exist).
    """

    def __init__(self, client_config: dict[str, Any], topic: str) -> None:
        from kafka import KafkaConsumer

        super().__init__(name="portrait-bench-recorder", daemon=True)
        self._consumer = KafkaConsumer(**client_config, group_id=None, enable_auto_commit=False,
                                       auto_offset_reset="earliest",
                                       fetch_max_wait_ms=_FETCH_MAX_WAIT_MS)  # fmt: skip
        assign_all(self._consumer, [topic])
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._receipts: dict[str, list[tuple[float, dict[str, int]]]] = defaultdict(list)
        self._comments: dict[str, int] = {}
        self._covered = 0
        self.last_received_s = 0.0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for record in iter_records(self._consumer, follow=True, stop=self._stop_event.is_set):
                self._handle(record.value, time.time())
        except Exception as exc:  # handed to the caller through .error
            logger.exception("profile-update recorder failed")
            self.error = exc
        finally:
            self._consumer.close()

    def _handle(self, value: bytes | None, received_s: float) -> None:
        update = json.loads(value) if value else None
        if not isinstance(update, dict) or not isinstance(update.get("profile"), dict):
            return
        user, profile = str(update["user_id"]), update["profile"]
        comments = int(profile.get("comment_count", 0))
        with self._lock:
            self._receipts[user].append((received_s, dict(profile.get("applied_offsets", {}))))
            previous = self._comments.get(user, 0)
            if comments > previous:
                self._covered += comments - previous
                self._comments[user] = comments
            self.last_received_s = received_s

    @property
    def covered(self) -> int:
        """Comment events accounted for in the latest profiles of all users so far."""
        with self._lock:
            return self._covered

    def latencies(self, sent: Iterable[_Sent]) -> list[float]:
        """Per sent event: first receipt covering its offset minus its send time, seconds.

        Events no update covers yet are left out.
        """
        result = []
        with self._lock:
            for event in sent:
                for received_s, offsets in self._receipts.get(event.user_id, ()):
                    if offsets.get(event.partition_key, -1) >= event.offset:
                        result.append(received_s - event.sent_s)
                        break
        return result

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop reading and wait for the thread to end."""
        self._stop_event.set()
        self.join(timeout=timeout_s)


@dataclass
class BenchWorker:
    """One worker configuration under test: process, topics, producer and recorder.

    Args:
        config: The varied settings.
        settings: The worker's complete settings (unique app id, topics, state dir, metrics port).
        work_dir: Where its log goes.
        command: The worker program (default ``portrait worker``).
    """

    config: WorkerConfig
    settings: Settings
    work_dir: Path
    command: Sequence[str] = WORKER_COMMAND
    process: WorkerProcess = field(init=False)
    _recorder: UpdateRecorder | None = field(default=None, init=False)
    _producer: Any = field(default=None, init=False)

    def __post_init__(self) -> None:
        log = self.work_dir / f"worker-{self.config.name}.log"
        self.process = WorkerProcess(self.settings, log, command=self.command)

    def create_topics(self) -> None:
        """Create the worker's four topics (those that exist are left as they are).

        Raises:
            BrokerUnavailableError: The broker refused to create a topic.
        """
        client = kafka_client_config(self.settings.kafka)
        topics = self.settings.topics
        create_topics(client.pop("bootstrap_servers"), [topics.comments, topics.behavior,
                      topics.profile_updates, topics.dead_letter], topics.partitions,
                      topics.replication_factor, **client)  # fmt: skip

    def start(self) -> None:
        """Create the worker's topics and start its process (returns at once).

        Raises:
            BrokerUnavailableError: The broker refused to create a topic.
        """
        self.create_topics()
        self.process.start()

    def warm_up(self, events: Sequence[Mapping[str, Any]], timeout_s: float) -> None:
        """Wait for the process, then send ``events`` and wait until they are profiled.

        Afterwards the worker has joined its group, owns its partitions and has run the model.

        Raises:
            WorkerProcessError: The worker exited or did not come up.
            BenchError: The warm-up events were not profiled within ``timeout_s``.
        """
        self.process.wait_ready(timeout_s)
        self._recorder = UpdateRecorder(kafka_client_config(self.settings.kafka),
                                        self.settings.topics.profile_updates)  # fmt: skip
        self._recorder.start()
        self._producer = make_producer(self.settings)
        records = tagged_records(events, "warmup", self.settings, len(events))
        self._send_and_wait(records, 0.0, timeout_s, "warm-up")

    def burst(self, records: Sequence[ReplayRecord], timeout_s: float) -> float:
        """Send ``records`` as fast as possible; events/s until the last is profiled.

        Raises:
            BenchError: Not all were profiled within ``timeout_s``.
            WorkerProcessError: The worker exited.
        """
        phase = self._send_and_wait(records, 0.0, timeout_s, f"burst of {self.config.name}")
        return len(records) / max(phase.done_s - phase.started_s, 1e-9)

    def open_loop(
        self, records: Sequence[ReplayRecord], rate_per_s: float, timeout_s: float
    ) -> LatencyResult:
        """Send ``records`` at ``rate_per_s`` (open loop) and measure per-event latency.

        Raises:
            BenchError: Not all were profiled within ``timeout_s`` after the last send.
            WorkerProcessError: The worker exited.
        """
        sent: list[_Sent] = []

        def delivered(record: ReplayRecord, metadata: Any, sent_s: float) -> None:
            key = f"{metadata.topic}:{metadata.partition}"
            sent.append(_Sent(record.key.decode("utf-8"), key, metadata.offset, sent_s))

        phase = self._send_and_wait(
            records, rate_per_s, timeout_s, f"open loop of {self.config.name}", delivered
        )
        assert self._recorder is not None
        latencies = self._recorder.latencies(sent)
        if len(latencies) != len(records):
            raise BenchError(f"open loop of {self.config.name}: {len(latencies)} of "
                             f"{len(records)} events matched a profile update")  # fmt: skip
        summary = {**nearest_rank(latencies), "max": max(latencies)}
        return LatencyResult(
            offered_rate_per_s=rate_per_s, sent_rate_per_s=phase.sent_rate_per_s,
            events=len(records), latency_s=summary, drain_s=phase.done_s - phase.sent_s,
        )  # fmt: skip

    def _send_and_wait(
        self,
        records: Sequence[ReplayRecord],
        rate_per_s: float,
        timeout_s: float,
        phase: str,
        on_delivery: Any = None,
    ) -> _Phase:
        """Publish, then wait until the recorder accounts for every record."""
        assert self._recorder is not None
        target = self._recorder.covered + len(records)
        started_s = time.time()
        report = publish(records, self._producer, rate_per_s=rate_per_s, progress=False,
                         on_delivery=on_delivery)  # fmt: skip
        sent_s = time.time()
        if report.failed:
            raise BenchError(f"{phase}: the broker did not acknowledge {report.failed} records")
        deadline = time.monotonic() + timeout_s
        while self._recorder.covered < target:
            self.process.check_alive()
            if self._recorder.error is not None:
                raise BenchError(f"{phase}: reading profile updates failed: {self._recorder.error}")
            if time.monotonic() > deadline:
                raise BenchError(f"{phase}: {target - self._recorder.covered} of {len(records)} "
                                 f"events not profiled within {timeout_s:.0f} s; log "
                                 f"{self.process.log_path}:\n"
                                 f"{self.process.log_tail()}")  # fmt: skip
            time.sleep(_POLL_S)
        return _Phase(started_s, sent_s, self._recorder.last_received_s, report.events_per_s)

    def peak_rss_bytes(self) -> int | None:
        """The worker's peak resident set size (``VmHWM`` in ``/proc/<pid>/status``), bytes.

        Returns:
            None when the process is gone or the platform has no ``/proc``.
        """
        pid = self.process.pid
        if pid is None:
            return None
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # reported in kB
        return None

    def stop(self) -> None:
        """Stop the recorder, the producer and the worker process (safe to call twice)."""
        if self._recorder is not None:
            self._recorder.stop()
            self._recorder = None
        if self._producer is not None:
            self._producer.close()
            self._producer = None
        self.process.stop()
