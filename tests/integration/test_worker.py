"""``portrait worker`` end to end on the real local broker, with the tiny random model.

Events are produced first, then the worker runs as a subprocess (``portrait worker`` with
``PORTRAIT_...`` settings); the assertions are on what comes out: profile-update events (exact
counts, scores within 1e-6 of an offline computation with the same classifier and
``stream.profile`` functions, versions strictly increasing per user), dead-letter records (original
key, value and headers) and the Prometheus counters.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from models.contract.errors import BrokerUnavailableError, ConfigError
from models.contract.mixed import classify_with_clauses
from models.contract.routing import load_model
from stream.aggregate import apply_behavior, apply_comment
from stream.broker_wait import wait_for_broker_with_backoff
from stream.events import decode_behavior, decode_comment
from stream.profile import Profile, ScoredComment
from stream.settings import ProfileSettings, load_settings
from stream.tools.broker import create_topics
from stream.worker import ensure_topics

PARTITIONS = 2
USERS = ("ana", "bo", "chen", "dana")
T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
TOLERANCE = 1e-6


@dataclass
class Produced:
    """What a test wrote to the source topics, with the offsets the broker gave."""

    valid: list[tuple[str, int, int, bytes]] = field(default_factory=list)  # topic, part, off, val
    invalid: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    log_path: Path
    metrics_port: int

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(broker: Any, names: dict[str, str], state_dir: Path, model_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTRAIT_")}
    env.update({
        "PORTRAIT_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "PORTRAIT_KAFKA__SESSION_TIMEOUT_S": "6", "PORTRAIT_KAFKA__HEARTBEAT_INTERVAL_S": "1",
        "PORTRAIT_APP_ID": names["app"], "PORTRAIT_STATE_DIR": str(state_dir),
        "PORTRAIT_TOPICS__COMMENTS": names["comments"],
        "PORTRAIT_TOPICS__BEHAVIOR": names["behavior"],
        "PORTRAIT_TOPICS__PROFILE_UPDATES": names["updates"],
        "PORTRAIT_TOPICS__DEAD_LETTER": names["dlq"],
        "PORTRAIT_TOPICS__PARTITIONS": str(PARTITIONS),
        "PORTRAIT_BATCH__MAX_BATCH_SIZE": "16", "PORTRAIT_BATCH__MAX_WAIT_S": "0.2",
        "PORTRAIT_MODEL__PATH": str(model_dir), "PORTRAIT_MODEL__DEVICE": "cpu",
        "PORTRAIT_MODEL__INTRA_OP_THREADS": "1", "PORTRAIT_LOG_LEVEL": "info",
    })  # fmt: skip
    return env


@pytest.fixture
def names(unique_name: Callable[[str], str]) -> dict[str, str]:
    return {k: unique_name(k) for k in ("app", "comments", "behavior", "updates", "dlq")}


@pytest.fixture
def start_worker(
    broker: Any, names: dict[str, str], tmp_path: Path, tiny_model_dir: Path
) -> Iterator[Callable[[], Worker]]:
    """Starts ``portrait worker`` subprocesses (same app id and state dir); kills leftovers."""
    started: list[Worker] = []

    def start() -> Worker:
        port = _free_port()
        env = _env(broker, names, tmp_path / "state", tiny_model_dir)
        env["PORTRAIT_METRICS_PORT"] = str(port)
        log_path = tmp_path / f"worker-{len(started)}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-c", "from stream.tools.cli import main; main()", "worker"],
                env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        started.append(Worker(process, log_path, port))
        return started[-1]

    yield start
    for worker in started:
        if worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait(10)


def _comment(i: int, user: str, text: str, **extra: Any) -> dict[str, Any]:
    time = T0 + timedelta(minutes=37 * i)
    return {"event_id": f"c{i}", "user_id": user, "text": text, "event_time": time.isoformat(),
            **extra}  # fmt: skip


def _behavior(i: int, user: str, action: str, **extra: Any) -> dict[str, Any]:
    event_time_ms = int((T0 + timedelta(minutes=23 * i)).timestamp() * 1000)
    return {"event_id": f"b{i}", "user_id": user, "action": action, "event_time": event_time_ms,
            **extra}  # fmt: skip


TEXTS = ["great value, would buy again", "terrible support", "", "   \n\t", "🙂🙂🙂",
         "质量很好 but shipping was slow", "ok " * 3000, "meh"]  # fmt: skip
ACTIONS = ("view", "click", "like", "share", "cart", "purchase", "return")


def _produce(broker: Any, names: dict[str, str], first: int = 0, count: int = 24) -> Produced:
    """Valid comment and behaviour events for USERS, plus one invalid record of each kind."""
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all")
    produced = Produced()

    def send(topic: str, key: bytes | None, value: bytes | None, headers: Any = None) -> Any:
        return producer.send(topic, key=key, value=value, headers=headers or []).get(10)

    for i in range(first, first + count):
        user = USERS[i % len(USERS)]
        event = _comment(i, user, TEXTS[i % len(TEXTS)], category=("books", "toys")[i % 2],
                         **({"rating": 1 + i % 5} if i % 3 == 0 else {}))  # fmt: skip
        value = json.dumps(event).encode()
        if i % 8 == 7:  # a lone surrogate escape: valid JSON, replaced, then classified
            value = value.replace(b'"text": "', b'"text": "\\ud83d ')
        meta = send(names["comments"], user.encode(), value)
        produced.valid.append((names["comments"], meta.partition, meta.offset, value))
        action = ACTIONS[i % len(ACTIONS)]
        extra = {"value": 10.0 + i} if action == "purchase" else {}
        value = json.dumps(_behavior(i, user, action, category="books", **extra)).encode()
        meta = send(names["behavior"], user.encode(), value)
        produced.valid.append((names["behavior"], meta.partition, meta.offset, value))
    if first == 0:
        bad = [
            (names["comments"], b"ana", b"not json", "not_json", [("trace-id", b"t-1")]),
            (names["comments"], b"bo", None, "tombstone", None),
            (names["comments"], b"chen", b"", "empty_value", None),
            (names["comments"], b"zed", json.dumps(_comment(99, "ana", "x")).encode(),
             "key_mismatch", None),
            (names["behavior"], b"dana", b"\xff\xfe{", "not_utf8", None),
            (names["behavior"], b"ana", json.dumps(_behavior(98, "ana", "teleport")).encode(),
             "invalid_field", None),
        ]  # fmt: skip
        for topic, key, value, reason, headers in bad:
            meta = send(topic, key, value, headers)
            produced.invalid.append({"topic": topic, "partition": meta.partition,
                                     "offset": meta.offset, "key": key, "value": value,
                                     "reason": reason, "headers": headers or []})  # fmt: skip
    producer.flush()
    producer.close()
    return produced


def _offline(produced: Produced, model_dir: Path) -> dict[str, Profile]:
    """The reference: the same classifier, models.contract.mixed and stream.profile, one event at a
    time."""
    classifier = load_model(model_dir, "cpu")
    settings = ProfileSettings()
    profiles: dict[str, Profile] = {}
    for topic, partition, offset, value in produced.valid:
        where = {"topic": topic, "partition": partition, "offset": offset, "settings": settings}
        if "comments" in topic:
            event = decode_comment(value)
            result = classify_with_clauses(classifier, [event.text])[0]
            scored = ScoredComment(event, result.probabilities, result.mixed,
                                   classifier.model_version, result.clause_labels)  # fmt: skip
            profile = profiles.setdefault(event.user_id, Profile(user_id=event.user_id))
            apply_comment(profile, scored, **where)
        else:
            action = decode_behavior(value)
            profile = profiles.setdefault(action.user_id, Profile(user_id=action.user_id))
            apply_behavior(profile, action, **where)
    return profiles


def _read_until(bootstrap: str, topic: str, done: Callable[[list[Any]], bool],
                timeout_s: float) -> list[Any]:  # fmt: skip
    """All records of ``topic`` in partition order, read until ``done(records)`` or timeout."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False)  # fmt: skip
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not done(records):
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def _assert_close(got: Any, want: Any, path: str = "profile") -> None:
    if isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), path
        for key in want:
            _assert_close(got[key], want[key], f"{path}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _assert_close(g, w, f"{path}[{i}]")
    elif isinstance(want, float) and not isinstance(got, bool):
        assert math.isclose(got, want, rel_tol=TOLERANCE, abs_tol=TOLERANCE), (path, got, want)
    else:
        assert got == want, (path, got, want)


def _latest(updates: list[Any]) -> dict[str, dict[str, Any]]:
    latest: dict[str, dict[str, Any]] = {}
    for record in updates:
        latest[record.key.decode()] = json.loads(record.value)
    return latest


def _caught_up(expected: dict[str, Profile]) -> Callable[[list[Any]], bool]:
    def done(records: list[Any]) -> bool:
        latest = _latest(records)
        return all(latest.get(u, {}).get("version") == p.version for u, p in expected.items())

    return done


def _metrics(worker: Worker) -> str:
    url = f"http://127.0.0.1:{worker.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def _sample(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(name + ("{" if labels else " ")):
            series, _, number = line.rpartition(" ")
            found = series[series.find("{") + 1 : -1].split(",") if labels else []
            if not labels or sorted(found) == sorted(want.split(",")):
                return float(number)
    return 0.0


def _stop(worker: Worker) -> int:
    worker.process.send_signal(signal.SIGTERM)
    return worker.process.wait(30)


def test_worker_profiles_match_offline_computation(
    broker: Any, names: dict[str, str], start_worker: Callable[[], Worker], tiny_model_dir: Path
) -> None:
    create_topics(broker.bootstrap_servers, [names["comments"], names["behavior"]], PARTITIONS)
    produced = _produce(broker, names)
    expected = _offline(produced, tiny_model_dir)
    worker = start_worker()

    updates = _read_until(broker.bootstrap_servers, names["updates"], _caught_up(expected), 45)
    assert _caught_up(expected)(updates), worker.log_tail()
    dead = _read_until(broker.bootstrap_servers, names["dlq"],
                       lambda r: len(r) >= len(produced.invalid), 10)  # fmt: skip
    metrics = _metrics(worker)
    assert _stop(worker) == 0, worker.log_tail()

    # the latest update per user is the offline profile; counts exact, floats within 1e-6
    latest = _latest(updates)
    assert set(latest) == set(USERS)
    for user, profile in expected.items():
        assert latest[user]["model_version"] == "tiny-random-bert-test"
        _assert_close(latest[user]["profile"], profile.to_dict())
    # versions strictly increase per user; micro-batches fold several events into one update
    by_user: dict[str, list[int]] = defaultdict(list)
    for record in updates:
        by_user[record.key.decode()].append(json.loads(record.value)["version"])
    for user, versions in by_user.items():
        assert versions == sorted(set(versions)), (user, versions)
    assert len(updates) < len(produced.valid)
    # all updates of one micro-batch carry its updated_at: at most one per user per micro-batch
    users_by_batch: dict[str, list[bytes]] = defaultdict(list)
    for record in updates:
        users_by_batch[json.loads(record.value)["updated_at"]].append(record.key)
    assert all(len(users) == len(set(users)) for users in users_by_batch.values())
    assert max(len(users) for users in users_by_batch.values()) > 1
    # dead letters: original key, value and headers, plus the portrait.* headers
    assert len(dead) == len(produced.invalid)
    by_source = {}
    for record in dead:
        headers = dict(record.headers)
        by_source[headers["portrait.source.topic"], headers["portrait.source.offset"]] = record
    for bad in produced.invalid:
        record = by_source[bad["topic"].encode(), str(bad["offset"]).encode()]
        headers = dict(record.headers)
        assert (record.key, record.value) == (bad["key"], bad["value"])
        assert headers["portrait.source.partition"] == str(bad["partition"]).encode()
        assert headers["portrait.error.reason"] == bad["reason"].encode()
        assert headers["portrait.error.class"] == b"EventError"
        assert headers["portrait.error.detail"]
        for name, value in bad["headers"]:
            assert headers[name] == value
    # metrics: consumed = profiled + dead-lettered, per topic and reason
    for topic in (names["comments"], names["behavior"]):
        n_valid = sum(1 for t, *_ in produced.valid if t == topic)
        n_bad = sum(1 for b in produced.invalid if b["topic"] == topic)
        assert _sample(metrics, "portrait_events_consumed_total", topic=topic) == n_valid + n_bad
    assert _sample(metrics, "portrait_events_dead_lettered_total", topic=names["comments"],
                   reason="key_mismatch") == 1  # fmt: skip
    assert _sample(metrics, "portrait_profile_updates_total") == len(updates)
    assert _sample(metrics, "portrait_model_info", model_version="tiny-random-bert-test",
                   provider="CPUExecutionProvider", device="cpu",
                   requested_device="cpu") == 1  # fmt: skip


def test_restarted_worker_applies_only_new_events(
    broker: Any, names: dict[str, str], start_worker: Callable[[], Worker], tiny_model_dir: Path
) -> None:
    create_topics(broker.bootstrap_servers, [names["comments"], names["behavior"]], PARTITIONS)
    first = _produce(broker, names, count=8)
    worker = start_worker()
    expected = _offline(first, tiny_model_dir)
    updates = _read_until(broker.bootstrap_servers, names["updates"], _caught_up(expected), 45)
    assert _caught_up(expected)(updates), worker.log_tail()
    assert _stop(worker) == 0, worker.log_tail()

    second = _produce(broker, names, first=8, count=4)
    both = Produced(valid=first.valid + second.valid)
    expected = _offline(both, tiny_model_dir)
    worker = start_worker()
    updates = _read_until(broker.bootstrap_servers, names["updates"], _caught_up(expected), 45)
    assert _caught_up(expected)(updates), worker.log_tail()
    assert _stop(worker) == 0, worker.log_tail()
    for user, update in _latest(updates).items():
        _assert_close(update["profile"], expected[user].to_dict())
    versions: dict[str, list[int]] = defaultdict(list)
    for record in updates:
        versions[record.key.decode()].append(json.loads(record.value)["version"])
    assert all(v == sorted(set(v)) for v in versions.values()), versions


def test_source_topic_with_other_partition_count_is_refused(
    broker: Any, names: dict[str, str]
) -> None:
    create_topics(broker.bootstrap_servers, [names["comments"]], PARTITIONS + 1)
    settings = load_settings(
        kafka={"bootstrap_servers": broker.bootstrap_servers}, app_id=names["app"],
        topics={"comments": names["comments"], "behavior": names["behavior"],
                "profile_updates": names["updates"], "dead_letter": names["dlq"],
                "partitions": PARTITIONS},
    )  # fmt: skip
    with pytest.raises(ConfigError, match="PORTRAIT_TOPICS__PARTITIONS"):
        ensure_topics(settings)


def test_unreachable_broker_is_retried_with_backoff_and_one_line_per_attempt(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = load_settings(kafka={"bootstrap_servers": f"127.0.0.1:{_free_port()}"})
    delays: list[float] = []
    with pytest.raises(BrokerUnavailableError):
        wait_for_broker_with_backoff(settings, attempt_timeout_s=0.5, max_attempts=4,
                                     sleep=delays.append)  # fmt: skip
    assert delays == [1.0, 2.0, 4.0]
    lines = [r for r in caplog.records if "broker not reachable" in r.getMessage()]
    assert len(lines) == 3
    assert "connection refused (nothing listens there)" in lines[0].getMessage()  # says why
