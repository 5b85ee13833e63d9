"""Test kit of the reliability tests: settings, seeded events, the offline reference, readers.

The reliability tests (crash recovery, poison events, outages, erasure) all do the same things:
run ``portrait worker`` as a subprocess (:class:`stream.tools.worker_process.WorkerProcess`),
produce
seeded events while recording the offset the broker gave each one, compute the profiles offline
with the same classifier and ``stream.profile`` functions, read ``profile-updates.v1`` until every
user has reached the expected version, and compare (counts exact, floats within 1e-6).
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import signal
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from models.contract.errors import EventError
from models.contract.mixed import classify_with_clauses
from models.contract.routing import load_model
from stream.aggregate import apply_behavior, apply_comment
from stream.events import BehaviorEvent, CommentEvent, decode_behavior, decode_comment
from stream.profile import Profile, ScoredComment
from stream.records import check_event_time
from stream.settings import ProfileSettings, Settings, load_settings
from stream.tools.broker import create_topics
from stream.tools.worker_process import WORKER_COMMAND, WorkerProcess, free_port

PARTITIONS = 4
TOLERANCE = 1e-6
T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
TEXTS = (
    "great value, would buy again", "terrible support, never again", "it is fine I guess",
    "arrived late but works", "absolutely love it!!", "broke after two days", "meh",
    "质量很好 but shipping was slow", "🙂🙂🙂", "", "   \n\t", "the best purchase this year",
)  # fmt: skip
ACTIONS = ("view", "click", "like", "share", "cart", "purchase", "return")
CATEGORIES = ("books", "toys", "garden", "music", "games", "tools")
COMMIT_INTERVAL_S = 3.5
"""faust's commit interval (``broker_commit_interval``, 2.8 s) plus a margin."""
READY_LINE = "[^Worker]: Ready"
SLOW_WORKER_SCRIPT = Path(__file__).resolve().parent / "slow_worker.py"


def worker_settings(
    bootstrap: str, name: Callable[[str], str], state_dir: Path, model_dir: Path, **overrides: Any
) -> Settings:
    """Settings of a test worker: unique app id and topics, 4 partitions, the tiny model.

    Args:
        bootstrap: The broker's ``host:port``.
        name: The ``unique_name`` fixture.
        state_dir: RocksDB directory (distinct per worker of one group).
        model_dir: The tiny model directory.
        **overrides: Further settings, merged over these (sections as dicts).
    """
    base: dict[str, Any] = {
        "app_id": name("app"), "state_dir": state_dir, "metrics_port": free_port(),
        "kafka": {"bootstrap_servers": bootstrap, "session_timeout_s": 6,
                  "heartbeat_interval_s": 1},
        "topics": {"comments": name("comments"), "behavior": name("behavior"),
                   "profile_updates": name("updates"), "dead_letter": name("dlq"),
                   "erasure": name("erasure"), "partitions": PARTITIONS},
        "batch": {"max_batch_size": 32, "max_wait_s": 0.05},
        "model": {"path": model_dir, "device": "cpu", "intra_op_threads": 1},
        "log_level": os.environ.get("PORTRAIT_TEST_WORKER_LOG_LEVEL", "info"),
    }  # fmt: skip
    for key, value in overrides.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return load_settings(**base)


def create_source_topics(settings: Settings) -> None:
    """Create the comment and behaviour topics (4 partitions) before producing to them."""
    topics = settings.topics
    create_topics(settings.kafka.bootstrap_servers, [topics.comments, topics.behavior],
                  topics.partitions)  # fmt: skip


def peer_settings(settings: Settings, state_dir: Path) -> Settings:
    """The settings of a second worker of the same group: own state dir and metrics port."""
    return settings.model_copy(update={"state_dir": state_dir, "metrics_port": free_port()})


def start_worker(
    settings: Settings, log_path: Path, *, slow_marker: str = "", slow_s: float = 0.0
) -> WorkerProcess:
    """Start ``portrait worker`` and wait until its metrics endpoint answers.

    Args:
        settings: The worker's settings.
        log_path: Its log file (appended to).
        slow_marker: With ``slow_s``: run the worker through ``slow_worker.py``, whose classifier
            sleeps ``slow_s`` seconds on every batch holding a text that contains the marker.
        slow_s: Seconds of that sleep.
    """
    command: Sequence[str] = WORKER_COMMAND
    if slow_marker:
        command = (sys.executable, str(SLOW_WORKER_SCRIPT), slow_marker, str(slow_s), "worker")
    worker = WorkerProcess(settings, log_path, command)
    worker.start()
    worker.wait_ready(timeout_s=90)
    return worker


def kill9(worker: WorkerProcess) -> None:
    """SIGKILL the worker (no shutdown, no commit, no flush) and reap it."""
    assert worker.pid is not None
    os.kill(worker.pid, signal.SIGKILL)
    worker.stop()


# -- events ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Outgoing:
    """A record to produce: topic, key and value bytes (value None = tombstone)."""

    topic: str
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True)
class Sent:
    """A produced record with the partition and offset the broker gave it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def comment(i: int, user: str, text: str, **extra: Any) -> dict[str, Any]:
    """A ``comments.v1`` event dict; event time ``T0 + 37 min * i`` (RFC 3339)."""
    when = T0 + timedelta(minutes=37 * i)
    return {"event_id": f"c{i}", "user_id": user, "text": text, "event_time": when.isoformat(),
            **extra}  # fmt: skip


def behavior(i: int, user: str, action: str, **extra: Any) -> dict[str, Any]:
    """A ``behavior.v1`` event dict; event time ``T0 + 23 min * i`` (epoch ms)."""
    event_time_ms = int((T0 + timedelta(minutes=23 * i)).timestamp() * 1000)
    return {"event_id": f"b{i}", "user_id": user, "action": action, "event_time": event_time_ms,
            **extra}  # fmt: skip


def seeded_events(settings: Settings, seed: int, users: int, count: int,
                  first: int = 0) -> list[Outgoing]:  # fmt: skip
    """``count`` valid events of ``users`` users, about half comments, event times shuffled a bit.

    Args:
        settings: Gives the topic names.
        seed: Seeds users, texts, actions and the order of event times.
        users: Users ``u000``, ``u001``, ...
        count: Events.
        first: Index of the first event (event ids and times), so later calls add new events.
    """
    rng = random.Random(seed)
    out = []
    for i in range(first, first + count):
        user = f"u{rng.randrange(users):03d}"
        when = i + rng.randint(-3, 3)  # a few events arrive out of event-time order
        category = rng.choice(CATEGORIES)
        if rng.random() < 0.5:
            extra: dict[str, Any] = {"rating": rng.randint(1, 5)} if rng.random() < 0.3 else {}
            event = comment(when, user, rng.choice(TEXTS), category=category, **extra)
            event["event_id"] = f"c{i}"
            topic = settings.topics.comments
        else:
            action = rng.choice(ACTIONS)
            extra = {"value": round(rng.uniform(1, 100), 2)} if action == "purchase" else {}
            event = behavior(when, user, action, category=category, **extra)
            event["event_id"] = f"b{i}"
            topic = settings.topics.behavior
        out.append(Outgoing(topic, user.encode(), json.dumps(event).encode()))
    return out


def produce(bootstrap: str, records: Iterable[Outgoing], *, pace_s: float = 0.0,
            chunk: int = 50) -> list[Sent]:  # fmt: skip
    """Produce records in order; return them with their partitions and offsets.

    Args:
        bootstrap: The broker.
        records: What to send (the default partitioner: murmur2 of the key, as the worker's own
            producers and ``portrait replay`` use).
        pace_s: Pause after every ``chunk`` records (0 = as fast as possible).
        chunk: Records between pauses.
    """
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        futures = []
        for n, record in enumerate(records, 1):
            futures.append((record, producer.send(record.topic, key=record.key,
                                                  value=record.value)))  # fmt: skip
            if pace_s and n % chunk == 0:
                producer.flush()
                time.sleep(pace_s)
        producer.flush()
        return [Sent(r.topic, meta.partition, meta.offset, r.key, r.value)
                for r, fut in futures for meta in (fut.get(30),)]  # fmt: skip
    finally:
        producer.close()


class BackgroundProducer(threading.Thread):
    """Produces records at a pace from a thread; :meth:`result` joins and returns them."""

    def __init__(self, bootstrap: str, records: list[Outgoing], pace_s: float, chunk: int = 50):
        super().__init__(daemon=True)
        self._args = (bootstrap, records, pace_s, chunk)
        self._sent: list[Sent] | None = None
        self._error: BaseException | None = None

    def run(self) -> None:
        bootstrap, records, pace_s, chunk = self._args
        try:
            self._sent = produce(bootstrap, records, pace_s=pace_s, chunk=chunk)
        except BaseException as exc:  # re-raised in result()
            self._error = exc

    def result(self, timeout_s: float = 120.0) -> list[Sent]:
        self.join(timeout_s)
        if self._error is not None:
            raise self._error
        assert self._sent is not None, "the producer thread did not finish"
        return self._sent


# -- the offline reference -----------------------------------------------------------------------
def offline_profiles(
    sent: Iterable[Sent], model_dir: Path, pseudonymise: Callable[[str], str] | None = None
) -> dict[str, Profile]:
    """The reference profiles: the same classifier, ``models.contract.mixed`` and ``stream.profile``
    functions, in order.

    Records that do not decode or are dated far from the clock are skipped (the worker
    dead-letters them). Texts are classified
    one at a time with their clauses (the default mixed rule), so batch composition cannot matter.
    ``pseudonymise`` maps user ids as the worker does with pseudonymisation on.
    """
    classifier = load_model(model_dir, "cpu", 1)
    settings = ProfileSettings()
    profiles: dict[str, Profile] = {}
    now = datetime.now(UTC)
    for record in sent:
        where: dict[str, Any] = {"topic": record.topic, "partition": record.partition,
                                 "offset": record.offset, "settings": settings}  # fmt: skip
        try:
            event: CommentEvent | BehaviorEvent = (
                decode_comment if "comments" in record.topic else decode_behavior
            )(record.value)
            check_event_time(event.event_time, now)
        except EventError:  # the worker dead-letters it: no profile change
            continue
        if pseudonymise is not None:
            event = event.model_copy(update={"user_id": pseudonymise(event.user_id)})
        profile = profiles.setdefault(event.user_id, Profile(user_id=event.user_id))
        if isinstance(event, CommentEvent):
            result = classify_with_clauses(classifier, [event.text])[0]
            apply_comment(profile, ScoredComment(event, result.probabilities, result.mixed,
                                                 classifier.model_version, result.clause_labels),
                          **where)  # fmt: skip
        else:
            apply_behavior(profile, event, **where)
    return profiles


# -- reading the output --------------------------------------------------------------------------
def read_topic(bootstrap: str, topic: str, done: Callable[[list[Any]], bool],
               timeout_s: float = 60.0, settle_s: float = 0.0) -> list[Any]:  # fmt: skip
    """All records of ``topic`` (every partition, from the start) until ``done(records)``.

    Args:
        bootstrap: The broker.
        topic: The topic.
        done: Stop reading once it returns True (or at ``timeout_s``).
        timeout_s: Seconds to read at most before ``done``.
        settle_s: Seconds to keep reading after ``done``, to catch records that should not be
            there (e.g. an unexpected re-emission).
    """
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False)  # fmt: skip
    try:
        partitions = consumer.partitions_for_topic(topic) or set(range(PARTITIONS))
        consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not done(records):
            for batch in consumer.poll(timeout_ms=300).values():
                records.extend(batch)
        settled = time.monotonic() + settle_s
        while time.monotonic() < settled:
            for batch in consumer.poll(timeout_ms=300).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def latest_profiles(updates: Iterable[Any]) -> dict[str, dict[str, Any]]:
    """The highest-version update per key, as a consumer of ``profile-updates.v1`` keeps them.

    A tombstone (value None) drops the key: what follows starts a new profile.
    """
    latest: dict[str, dict[str, Any]] = {}
    for record in updates:
        key = record.key.decode()
        if record.value is None:
            latest.pop(key, None)
            continue
        update = json.loads(record.value)
        if key not in latest or update["version"] >= latest[key]["version"]:
            latest[key] = update
    return latest


def caught_up(expected: dict[str, Profile]) -> Callable[[list[Any]], bool]:
    """``done`` for :func:`read_topic`: every expected user's latest version has arrived."""

    def done(records: list[Any]) -> bool:
        latest = latest_profiles(records)
        return all(latest.get(u, {}).get("version") == p.version for u, p in expected.items())

    return done


def assert_close(got: Any, want: Any, path: str = "profile") -> None:
    """Equal, except floats within :data:`TOLERANCE` (relative or absolute)."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), (path, got, want)
        for key in want:
            assert_close(got[key], want[key], f"{path}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), (path, got, want)
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_close(g, w, f"{path}[{i}]")
    elif isinstance(want, float) and not isinstance(got, bool):
        assert math.isclose(got, want, rel_tol=TOLERANCE, abs_tol=TOLERANCE), (path, got, want)
    else:
        assert got == want, (path, got, want)


_SEGMENT_FIELDS = ("segments", "segment_transitions")
"""Profile fields the offline reference does not compute: segment decisions depend on where
micro-batches end (tests/integration/test_segment_stream.py checks them)."""


def assert_profiles_match(updates: list[Any], expected: dict[str, Profile]) -> None:
    """Latest update per user == the offline profile; same-version duplicates hold the same profile.

    Raises:
        AssertionError: A user is missing, extra, or differs (path, got, want in the message).
    """
    latest = latest_profiles(updates)
    assert set(latest) == set(expected), (sorted(set(latest) ^ set(expected)))[:10]
    for user, profile in expected.items():
        got = dict(latest[user]["profile"])
        for key in _SEGMENT_FIELDS:  # decided per micro-batch: checked by the segment tests
            got[key] = profile.to_dict()[key]
        assert_close(got, profile.to_dict(), f"profile[{user}]")
    seen: dict[tuple[bytes, int], dict[str, Any]] = {}
    for record in updates:
        if record.value is None:  # an erasure: the user's versions start again
            seen = {k: v for k, v in seen.items() if k[0] != record.key}
            continue
        update = json.loads(record.value)
        first = seen.setdefault((record.key, update["version"]), update["profile"])
        assert_close(update["profile"], first, f"duplicate {record.key!r} v{update['version']}")


def wait_for_profiles(
    bootstrap: str,
    settings: Settings,
    expected: dict[str, Profile],
    worker: WorkerProcess | None = None,
    timeout_s: float = 90.0,
) -> list[Any]:
    """Read profile updates until every expected user's version arrived, then check them all."""  # noqa: E501
    updates = read_topic(bootstrap, settings.topics.profile_updates, caught_up(expected),
                         timeout_s)  # fmt: skip
    if not caught_up(expected)(updates):
        diagnosis = _group_state(bootstrap, settings)
        if worker is not None:
            diagnosis += "\n" + _group_history(worker.log_path) + "\n" + worker.log_tail()
        raise AssertionError(_missing(updates, expected) + "\n" + diagnosis)
    assert_profiles_match(updates, expected)
    return updates


GROUP_EVENT = re.compile(r"Joined group|Elected|synced group|Revoking|re-?joining|Heartbeat failed"
                         r"|Worker ready|Seek|paus|resum|ERROR|WARNING", re.IGNORECASE)  # fmt: skip
"""Log lines of a worker that tell its consumer group's history (joins, assignments, errors)."""


def _group_history(log_path: Path, limit: int = 60) -> str:
    """The last ``limit`` consumer-group lines of a worker log, for a failure message."""
    lines = [line[:240] for line in iter_log_lines(log_path) if GROUP_EVENT.search(line)]
    return "group history (worker log):\n" + "\n".join(lines[-limit:])


def _group_state(bootstrap: str, settings: Settings) -> str:
    """The group's committed offset and the end offset of every source partition, asked per
    partition (not the all-partitions OffsetFetch), for a failure message."""
    topics = (settings.topics.comments, settings.topics.behavior)
    tps = [TopicPartition(t, p) for t in topics for p in range(settings.topics.partitions)]
    try:
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=settings.app_id,
                                 enable_auto_commit=False)  # fmt: skip
        try:
            ends = consumer.end_offsets(tps)
            rows = [f"{tp.topic}[{tp.partition}] committed={consumer.committed(tp)} "
                    f"end={ends.get(tp)}" for tp in tps]  # fmt: skip
        finally:
            consumer.close(autocommit=False)
    except Exception as exc:  # noqa: BLE001 - a diagnosis must not hide the assertion
        return f"group state unavailable: {exc!r}"
    return "group state (broker):\n" + "\n".join(rows)


def _missing(updates: list[Any], expected: dict[str, Profile]) -> str:
    latest = latest_profiles(updates)
    behind = {u: (latest.get(u, {}).get("version"), p.version) for u, p in expected.items()
              if latest.get(u, {}).get("version") != p.version}  # fmt: skip
    return f"{len(behind)} users behind (got, want): {dict(list(behind.items())[:10])}"


# -- metrics and consumer groups -----------------------------------------------------------------
def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a metrics endpoint: ``(name, sorted label pairs) -> value``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text) for s in family.samples
    }  # fmt: skip


def metric(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
           **labels: str) -> float:  # fmt: skip
    """Sum of the samples of ``name`` whose labels include ``labels`` (0.0 when none)."""
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= set(lab))


def consumed(worker: WorkerProcess) -> float:
    """``portrait_events_consumed_total`` over all topics (0 when unreadable)."""
    try:
        return metric(scrape(worker.settings.metrics_port), "portrait_events_consumed_total")
    except OSError:
        return 0.0


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str,
               poll_s: float = 0.05) -> None:  # fmt: skip
    """Poll ``condition`` until true. Raises AssertionError naming ``what`` at the timeout."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(poll_s)


def committed_offsets(bootstrap: str, group: str) -> dict[tuple[str, int], int]:
    """The consumer group's committed offsets: ``(topic, partition) -> next offset``."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offsets = admin.list_group_offsets({group: None}).get(group, {})
    finally:
        admin.close()
    return {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()
            if meta.offset >= 0}  # fmt: skip


def committed_reached(bootstrap: str, group: str, ends: dict[tuple[str, int], int]) -> bool:
    """Whether the group's committed offset of every partition in ``ends`` reached it."""
    committed = committed_offsets(bootstrap, group)
    return all(committed.get(tp, -1) >= end for tp, end in ends.items())


def ready_lines(worker: WorkerProcess) -> int:
    """How many times the worker's log says faust is ready (assigned and recovered)."""
    return sum(READY_LINE in line for line in iter_log_lines(worker.log_path))


def end_of(sent: Iterable[Sent]) -> dict[tuple[str, int], int]:
    """The offset after the last produced record of each source partition."""
    ends: dict[tuple[str, int], int] = {}
    for record in sent:
        tp = (record.topic, record.partition)
        ends[tp] = max(ends.get(tp, 0), record.offset + 1)
    return ends


@dataclass
class Trial:
    """One crash trial's record, printed by the tests for the failure-mode table."""

    name: str
    details: dict[str, Any] = field(default_factory=dict)

    def report(self) -> None:
        print(f"TRIAL {self.name} " + " ".join(f"{k}={v}" for k, v in self.details.items()))


def iter_log_lines(path: Path) -> Iterator[str]:
    """The lines of a worker log (text, undecodable bytes replaced)."""
    yield from path.read_text(errors="replace").splitlines()
