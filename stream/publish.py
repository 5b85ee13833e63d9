"""Sending records to Kafka in order, at a rate or as fast as possible, with a progress bar.

Used by ``portrait replay`` (:mod:`stream.tools.replay`) and ``portrait demo``. Invalid rows travel
through :func:`publish` as :class:`InvalidRow` items so a file is read once, lazily; they are
collected into the :class:`ReplayReport`, never sent.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from models.contract.errors import BrokerUnavailableError
from stream.kafka_admin import kafka_client_config
from stream.settings import Settings

__all__ = [
    "DeliveryCallback",
    "InvalidRow",
    "Producer",
    "ReplayRecord",
    "ReplayReport",
    "format_report",
    "make_producer",
    "publish",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReplayRecord:
    """One validated event ready to send.

    Attributes:
        line: 1-based line of the row in its file (0 for events not read from a file).
        topic: destination topic.
        key: the user id as UTF-8 bytes.
        value: the event's JSON bytes.
    """

    line: int
    topic: str
    key: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class InvalidRow:
    """A row that was skipped.

    Attributes:
        line: 1-based line of the row in its file.
        reason: short code, as :class:`~models.contract.errors.EventError` reasons (``"not_json"``,
        ...).
        detail: what is wrong; names fields, never their content.
    """

    line: int
    reason: str
    detail: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}: {self.detail}"


@dataclass
class ReplayReport:
    """What a replay did.

    Attributes:
        produced: records acknowledged by the broker.
        failed: records the broker did not acknowledge (send errors).
        by_topic: acknowledged records per topic.
        invalid: skipped rows, in file order.
        elapsed_s: wall time from the first send to the final flush, seconds.
    """

    produced: int = 0
    failed: int = 0
    by_topic: Counter[str] = field(default_factory=Counter)
    invalid: list[InvalidRow] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def events_per_s(self) -> float:
        """Acknowledged records per second of :attr:`elapsed_s` (0 when nothing was sent)."""
        return self.produced / self.elapsed_s if self.elapsed_s > 0 else 0.0


class Producer(Protocol):
    """The part of ``kafka.KafkaProducer`` that replay uses (a seam for fakes)."""

    def send(self, topic: str, *, key: bytes, value: bytes) -> Any:
        """Queue one record; returns a future with ``add_callback``/``add_errback``."""

    def flush(self, timeout: float | None = None) -> None:
        """Block until every queued record is acknowledged or failed."""

    def close(self) -> None:
        """Release the connections."""


DeliveryCallback = Callable[[ReplayRecord, Any, float], None]
"""Called as ``(record, kafka RecordMetadata, send_wall_time_s)`` for every acknowledged record."""


def make_producer(settings: Settings) -> Any:
    """A kafka-python ``KafkaProducer`` for the configured broker (security passed through).

    Raises:
        BrokerUnavailableError: no bootstrap servers are configured, or the broker cannot be
            reached.
    """
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    if not settings.kafka.bootstrap_servers:
        raise BrokerUnavailableError(
            "no Kafka broker configured: set PORTRAIT_KAFKA__BOOTSTRAP_SERVERS=host:port "
            "(or run `portrait demo`, which starts a local broker)"
        )
    try:
        return KafkaProducer(**kafka_client_config(settings.kafka), linger_ms=5,
                             bootstrap_timeout_ms=10_000)  # fmt: skip
    except KafkaError as exc:
        raise BrokerUnavailableError(
            f"cannot reach the Kafka broker at {settings.kafka.bootstrap_servers}: {exc}"
        ) from exc


class _Pacer:
    """Sleeps so that sends keep to ``rate_per_s`` on average (0 = no pacing)."""

    def __init__(self, rate_per_s: float) -> None:
        self.interval_s = 1.0 / rate_per_s if rate_per_s > 0 else 0.0
        self.start = time.monotonic()
        self.count = 0

    def wait(self) -> None:
        if self.interval_s:
            delay_s = self.start + self.count * self.interval_s - time.monotonic()
            if delay_s > 0:
                time.sleep(delay_s)
        self.count += 1


def publish(
    rows: Iterable[ReplayRecord | InvalidRow],
    producer: Producer,
    *,
    rate_per_s: float = 0.0,
    progress: bool = True,
    total: int | None = None,
    on_delivery: DeliveryCallback | None = None,
    flush_timeout_s: float = 60.0,
) -> ReplayReport:
    """Send records in order, at ``rate_per_s`` or as fast as possible, and flush.

    Args:
        rows: records to send; :class:`InvalidRow` items are collected into the report, not sent.
        producer: a kafka-python producer (or a fake with the same ``send``/``flush``).
        rate_per_s: events per second; 0 sends as fast as the producer takes them.
        progress: show a tqdm progress bar on stderr.
        total: number of rows, for the progress bar.
        on_delivery: called for each acknowledged record (from the producer's I/O thread).
        flush_timeout_s: seconds to wait for the final acknowledgements.

    Returns:
        The report; ``failed`` counts records the broker did not acknowledge.

    Raises:
        ValueError: ``rate_per_s`` is negative.
    """
    from tqdm import tqdm

    if rate_per_s < 0:
        raise ValueError(f"rate_per_s must be >= 0 (got {rate_per_s})")
    report = ReplayReport()
    pacer = _Pacer(rate_per_s)
    started = time.monotonic()
    with tqdm(total=total, unit="event", disable=not progress, desc="replay") as bar:
        for row in rows:
            bar.update(1)
            if isinstance(row, InvalidRow):
                report.invalid.append(row)
                continue
            pacer.wait()
            _send(producer, row, report, on_delivery)
        producer.flush(timeout=flush_timeout_s)
    report.elapsed_s = time.monotonic() - started
    unacknowledged = pacer.count - report.produced - report.failed
    report.failed += max(0, unacknowledged)
    return report


def _send(
    producer: Producer,
    record: ReplayRecord,
    report: ReplayReport,
    on_delivery: DeliveryCallback | None,
) -> None:
    sent_at_s = time.time()

    def acknowledged(metadata: Any) -> None:
        report.produced += 1
        report.by_topic[record.topic] += 1
        if on_delivery is not None:
            on_delivery(record, metadata, sent_at_s)

    def failed(exc: BaseException) -> None:
        report.failed += 1
        logger.warning("send failed topic=%s line=%s error=%s", record.topic, record.line,
                       type(exc).__name__)  # fmt: skip

    future = producer.send(record.topic, key=record.key, value=record.value)
    future.add_callback(acknowledged)
    future.add_errback(failed)


def format_report(report: ReplayReport, *, max_invalid: int = 50) -> str:
    """The report as text: invalid rows (at most ``max_invalid``), then a summary line."""
    lines = [f"invalid {row}" for row in report.invalid[:max_invalid]]
    if len(report.invalid) > max_invalid:
        lines.append(f"... and {len(report.invalid) - max_invalid} more invalid rows")
    per_topic = ", ".join(f"{t}: {n}" for t, n in sorted(report.by_topic.items())) or "none"
    lines.append(
        f"produced {report.produced} events ({per_topic}) in {report.elapsed_s:.1f} s "
        f"({report.events_per_s:.0f} events/s); invalid rows skipped: {len(report.invalid)}; "
        f"failed sends: {report.failed}"
    )
    return "\n".join(lines)
