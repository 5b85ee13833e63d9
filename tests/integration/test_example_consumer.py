"""examples/consumer.py against a real worker's profile updates on the local broker.

The worker processes real held-out comments from simulated users; the example consumer must end
with one profile per user that accounts for every event of that user, every update it receives
must validate against schemas/profile-updates.v1.json, a stale redelivery must be ignored, and a
tombstone must delete the user (a later update starting them again). The example's command line is
run as a user would run it.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from kafka import KafkaProducer
from reliability_kit import worker_settings

from stream.publish import make_producer, publish
from stream.settings import Settings
from stream.tools.replay import records_from_events
from stream.tools.simulate import Population, load_test_texts, simulate
from stream.tools.worker_process import WorkerProcess

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "consumer.py"
SCHEMA = json.loads((ROOT / "schemas" / "profile-updates.v1.json").read_text())
CLIENT_OPTIONS = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}


def _load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("portrait_example_consumer", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def settings(
    broker: Any, unique_name: Callable[[str], str], tmp_path: Path, tiny_model_dir: Path
) -> Settings:
    return worker_settings(broker.bootstrap_servers, unique_name, tmp_path / "state",
                           tiny_model_dir)  # fmt: skip


def _events_per_user(population: Population) -> Counter[str]:
    return Counter(str(event["user_id"]) for event in population.events)


def _accounted(view: Any, expected: Counter[str]) -> bool:
    if set(view.by_user) != set(expected):
        return False
    for user_id, update in view.by_user.items():
        profile = update["profile"]
        if profile["comment_count"] + sum(profile["behavior_counts"].values()) != expected[user_id]:
            return False
    return True


def test_example_consumer_keeps_latest_profile_per_user_and_handles_tombstones(
    settings: Settings, tmp_path: Path, unique_name: Callable[[str], str]
) -> None:
    example = _load_example()
    population = simulate(load_test_texts(), users=5, comments_per_user=3, seed=3)
    expected = _events_per_user(population)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.start()
    try:
        worker.wait_ready(timeout_s=120)
        producer = make_producer(settings)
        try:
            report = publish(records_from_events(population.events, settings.topics), producer,
                             progress=False)  # fmt: skip
        finally:
            producer.close()
        assert report.failed == 0 and report.produced == len(population.events)

        view = example.LatestProfiles()
        decisions: Counter[str] = Counter()
        validator = Draft202012Validator(SCHEMA)
        invalid: list[str] = []

        def check(record: Any, decision: str) -> None:
            decisions[decision] += 1
            if record.value is not None:
                invalid.extend(e.message for e in validator.iter_errors(json.loads(record.value)))

        topic = settings.topics.profile_updates
        consumer = example.make_consumer(settings.kafka.bootstrap_servers, topic,
                                         unique_name("group"), **CLIENT_OPTIONS)  # fmt: skip
        try:
            deadline = time.monotonic() + 90
            while not _accounted(view, expected) and time.monotonic() < deadline:
                worker.check_alive()
                example.run(consumer, view, idle_timeout_s=2.0, on_record=check)
            assert _accounted(view, expected), (dict(expected), worker.log_tail())
            assert invalid == []
            assert decisions["updated"] >= len(expected)

            # a stale redelivery, a tombstone (erasure), then a fresh start for the erased user
            stale_user, erased_user = sorted(view.by_user)[:2]
            held = dict(view.by_user[stale_user])
            stale = dict(held, version=held["version"] - 1)
            fresh = dict(view.by_user[erased_user], version=1)
            sender = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, acks="all")
            for key, value in ((stale_user, stale), (erased_user, None), (erased_user, fresh)):
                payload = None if value is None else json.dumps(value).encode()
                sender.send(topic, key=key.encode(), value=payload).get(timeout=30)
            sender.close()
            seen = sum(decisions.values())
            deadline = time.monotonic() + 30
            while sum(decisions.values()) < seen + 3 and time.monotonic() < deadline:
                example.run(consumer, view, idle_timeout_s=1.0, on_record=check)
        finally:
            consumer.close()
        assert decisions["stale"] >= 1 and decisions["deleted"] == 1
        assert view.by_user[stale_user] == held
        assert view.by_user[erased_user]["version"] == 1

        command = [sys.executable, str(EXAMPLE), "--bootstrap-servers",
                   settings.kafka.bootstrap_servers, "--topic", topic, "--group-id",
                   unique_name("cli"), "--idle-timeout-s", "3",
                   *(f"--config={k}={v}" for k, v in CLIENT_OPTIONS.items())]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        lines = [json.loads(line) for line in done.stdout.splitlines()]
        assert lines[-1] == {"users": len(expected)}
        assert {"user_id": erased_user, "decision": "deleted", "version": None} in lines
    finally:
        worker.stop()
