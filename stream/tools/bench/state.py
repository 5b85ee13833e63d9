"""The state-only mode: many distinct users through aggregation and the RocksDB profile table.

The model is replaced by the stored predictions of the same texts
(:class:`~stream.tools.bench.stored.StoredPredictions`), so what is measured is the rest of the
worker:
decode, profile aggregation (:mod:`stream.profile`), the faust table on RocksDB with its changelog,
and one profile update per user. Every event belongs to a user of its own, so each event creates a
new profile: the table grows by one key per event, the worst case for state size.

Steps: create the topics, produce every event (before the worker starts, so producing does not
compete with it for the CPU), start the worker, then read its Prometheus counter
``portrait_profile_updates_total`` once a second until it reaches the number of events.
updates/s = updates between the first sample that saw an update and the last sample, divided by
the time between those samples (start-up and the group join are left out). The worker's peak RSS
is ``VmHWM`` of its process, read just before it is stopped.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from stream.publish import ReplayRecord, make_producer, publish
from stream.tools.bench.pipeline import BenchError, BenchWorker
from stream.tools.replay import records_from_events

__all__ = [
    "STATE_SEGMENTS",
    "write_bench_segments",
    "CLASSIFIER_NOTE",
    "StateResult",
    "run_state",
    "scrape_counter",
    "state_records",
]

logger = logging.getLogger(__name__)

CLASSIFIER_NOTE = (
    "classifier replaced by the stored predictions of the same texts (computed by the real model "
    "beforehand); the model is not run"
)
"""Said in the output of every state-only run."""

STATE_SEGMENTS = 20
"""Segments of the state-only runs with segments (target: their conditions cost under 25 % of the
updates/s of the run without)."""

_SEGMENT_TEMPLATES = (
    "profile.sentiment_score != null && profile.sentiment_score < -0.{k}",
    "profile.comment_count >= {k}",
    'profile.interests.exists(i, i.category == "c{k}" && i.sentiment_score != null '
    "&& i.sentiment_score > 0.5)",
    "profile.mixed_share != null && profile.mixed_share > 0.{k}",
    "sum(profile.daily.filter(d, d.day_ms > now_ms - 7 * 86400000).map(d, d.negative)) >= {k}",
)


def write_bench_segments(path: Path, n: int, *, crossing: bool = True) -> Path:
    """Write ``n`` segment definitions of realistic shapes (score and count bounds, an
    interest's sentiment, the mixed share, a 7-day window), cycling through them with
    different thresholds; returns ``path``.

    Args:
        path: The definitions file to write (JSON).
        n: Segments, <= :data:`stream.segment_definitions.MAX_SEGMENTS`.
        crossing: ``False``: each condition is followed by ``&& profile.comment_count > 1000000``
            (evaluated after it, so its whole cost is paid, and false in the bench): no profile
            enters a segment, which measures the evaluation alone, without transitions to emit.
    """
    never = "" if crossing else " && profile.comment_count > 1000000"
    segments = [
        {"name": f"bench-{i}", "description": "bench segment",
         "enter": f"({_SEGMENT_TEMPLATES[i % len(_SEGMENT_TEMPLATES)].format(k=1 + i // 5)})"
                  f"{never}"}
        for i in range(n)
    ]  # fmt: skip
    path.write_text(json.dumps({"segments": segments}), encoding="utf-8")
    return path


_SAMPLE_S = 0.25
_PRODUCE_CHUNK = 50_000  # events per flushed chunk: bounds the producer's buffered records
_Sample = tuple[float, float]  # (monotonic s, updates so far)
_UPDATES = "portrait_profile_updates"
_TRANSITIONS = "portrait_segment_transitions"


@dataclass(frozen=True)
class StateResult:
    """One state-only run.

    Attributes:
        users: Distinct users (= events = profile updates expected).
        produce_s: Seconds to produce the events (before the worker started).
        process_s: Seconds from the worker's first update to its last.
        updates_per_s: Profile updates (table writes) per second, steady state.
        peak_rss_bytes: The worker's peak resident set size, bytes (None if unreadable).
        state_dir_bytes: Size of the worker's RocksDB state directory at the end, bytes.
        segment_transitions: Segment transitions decided (``portrait_segment_transitions_total``
            at the end; each one is a ``segment-events.v1`` record); 0 without segments.
        classifier: :data:`CLASSIFIER_NOTE`.
    """

    users: int
    produce_s: float
    process_s: float
    updates_per_s: float
    peak_rss_bytes: int | None
    state_dir_bytes: int
    segment_transitions: int = 0
    classifier: str = CLASSIFIER_NOTE

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every attribute."""
        return asdict(self)


def scrape_counter(port: int, family: str, timeout_s: float = 1.0) -> float | None:
    """The sum of a counter family's ``_total`` samples on a local metrics endpoint.

    Args:
        port: The worker's metrics port.
        family: Metric family name without ``_total``, e.g. ``"portrait_profile_updates"``.
        timeout_s: HTTP timeout, seconds.

    Returns:
        The sum (0.0 when the family has no sample yet), or None when the endpoint cannot be read.
    """
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout_s) as rsp:
            text = rsp.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError):
        return None
    return sum(
        sample.value
        for metric in text_string_to_metric_families(text)
        if metric.name == family
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


def state_records(
    events: Sequence[Mapping[str, Any]], numbers: range, settings: Any
) -> Iterator[ReplayRecord]:
    """One comment record per user ``state.<n>`` for ``n`` in ``numbers``, texts cycled.

    Args:
        events: Comment event dicts with real texts (``stream.tools.simulate``).
        numbers: The user numbers.
        settings: The worker's settings (its comments topic).

    Yields:
        Records in user order, generated lazily.
    """
    chosen = ({**events[n % len(events)], "user_id": f"state.{n}", "event_id": f"state-{n}"}
              for n in numbers)  # fmt: skip
    yield from records_from_events(chosen, settings.topics)


def _produce(worker: BenchWorker, events: Sequence[Mapping[str, Any]], users: int) -> float:
    """Produce the ``users`` events in chunks (each flushed, so the producer's memory stays
    bounded); returns the seconds it took.

    Raises:
        BenchError: A send was not acknowledged.
    """
    producer = make_producer(worker.settings)
    started = time.monotonic()
    try:
        for first in range(0, users, _PRODUCE_CHUNK):
            numbers = range(first, min(users, first + _PRODUCE_CHUNK))
            report = publish(state_records(events, numbers, worker.settings), producer,
                             progress=False, flush_timeout_s=300.0)  # fmt: skip
            if report.failed or report.produced != len(numbers):
                raise BenchError(f"state: {len(numbers) - report.produced} of {len(numbers)} "
                                 f"sends were not acknowledged")  # fmt: skip
    finally:
        producer.close()
    return time.monotonic() - started


def _directory_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run_state(
    worker: BenchWorker,
    events: Sequence[Mapping[str, Any]],
    users: int,
    *,
    timeout_s: float,
    echo: Callable[[str], None] = print,
) -> StateResult:
    """Run the state-only measurement on ``worker`` (built with the stored-predictions command).

    Args:
        worker: Not started; its command must be :func:`stream.tools.bench.stored.worker_command`.
        events: Comment events with the texts the predictions file covers.
        users: Distinct users to push through, >= 1.
        timeout_s: Seconds for the worker to start and to finish all updates.
        echo: Progress lines.

    Returns:
        The :class:`StateResult`.

    Raises:
        BenchError: Not all updates were emitted within ``timeout_s``, or sends failed.
        WorkerProcessError: The worker exited or did not come up.
    """
    worker.create_topics()
    produce_s = _produce(worker, events, users)
    echo(f"state: produced {users} events in {produce_s:.1f} s; starting the worker")
    worker.process.start()
    try:
        worker.process.wait_ready(timeout_s)
        ready = (time.monotonic(), 0.0)
        first, last = _follow_updates(worker, users, time.monotonic() + timeout_s, echo)
        peak = worker.peak_rss_bytes()
        transitions = scrape_counter(worker.settings.metrics_port, _TRANSITIONS) or 0.0
    finally:
        worker.stop()
    if last[1] <= first[1]:  # everything arrived between two samples: count from ready
        first = ready
    seconds = max(last[0] - first[0], 1e-9)
    return StateResult(
        users=users, produce_s=produce_s, process_s=seconds,
        updates_per_s=(last[1] - first[1]) / seconds, peak_rss_bytes=peak,
        state_dir_bytes=_directory_bytes(worker.settings.state_dir),
        segment_transitions=int(transitions),
    )  # fmt: skip


def _follow_updates(worker: BenchWorker, users: int, deadline: float,
                    echo: Callable[[str], None]) -> tuple[_Sample, _Sample]:  # fmt: skip
    """Sample the updates counter until it reaches ``users``; (first, last) (monotonic s, count)."""
    first: tuple[float, float] | None = None
    next_echo = time.monotonic() + 30.0
    port = worker.settings.metrics_port
    while True:
        worker.process.check_alive()
        now, count = time.monotonic(), scrape_counter(port, _UPDATES) or 0.0
        if count > 0 and first is None:
            first = (now, count)
        if count >= users and first is not None:
            return first, (now, count)
        if now > deadline:
            raise BenchError(f"state: {int(count)} of {users} profile updates before the timeout; "
                             f"log {worker.process.log_path}")  # fmt: skip
        if now >= next_echo:
            echo(f"state: {int(count)} of {users} profile updates")
            next_echo = now + 30.0
        time.sleep(_SAMPLE_S)
