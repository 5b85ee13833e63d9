"""Crashes, restarts and rebalances: every event changes its user's profile exactly once.

``portrait worker`` runs as a subprocess against the real local broker with its RocksDB store;
events of a few hundred users are produced while it runs, it is killed with SIGKILL at a seeded
moment (a seeded number of consumed events), restarted, and the final profile of every user must
equal an offline computation from the same events with the same classifier and ``stream.profile``
functions (counts exact, floats within 1e-6). Every profile update with the same user and version
must carry the same profile (a redelivered batch re-emits, never double-counts).
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from reliability_kit import (
    COMMIT_INTERVAL_S,
    BackgroundProducer,
    Outgoing,
    Sent,
    Trial,
    behavior,
    committed_offsets,
    committed_reached,
    consumed,
    create_source_topics,
    end_of,
    kill9,
    metric,
    offline_profiles,
    peer_settings,
    produce,
    read_topic,
    ready_lines,
    scrape,
    seeded_events,
    start_worker,
    wait_for_profiles,
    wait_until,
    worker_settings,
)

from stream.privacy import user_partition
from stream.settings import Settings

USERS = 200
EVENTS = 1600
KILL_SEEDS = range(1, 1 + int(os.environ.get("PORTRAIT_TEST_KILL_TRIALS", "5")))
"""Seeds of the kill -9 trials: 5 by default; more for the failure-mode table in
docs/reliability.md (``PORTRAIT_TEST_KILL_TRIALS=20``)."""


@pytest.fixture
def settings(broker: Any, unique_name: Callable[[str], str], tmp_path: Path,
             tiny_model_dir: Path) -> Settings:  # fmt: skip
    """A test worker's settings; the source topics exist with 4 partitions."""
    settings = worker_settings(broker.bootstrap_servers, unique_name, tmp_path / "state-a",
                               tiny_model_dir)  # fmt: skip
    create_source_topics(settings)
    return settings


@pytest.mark.parametrize("seed", KILL_SEEDS)
def test_kill_9_during_load_loses_and_doubles_nothing(
    seed: int, broker: Any, settings: Settings, tmp_path: Path, tiny_model_dir: Path
) -> None:
    bootstrap = broker.bootstrap_servers
    events = seeded_events(settings, seed, USERS, EVENTS)
    kill_after = int(random.Random(seed).uniform(0.1, 0.9) * EVENTS)
    worker = start_worker(settings, tmp_path / "worker.log")
    producer = BackgroundProducer(bootstrap, events, pace_s=0.1)
    producer.start()
    wait_until(lambda: consumed(worker) >= kill_after, 60, f"{kill_after} events consumed")
    kill9(worker)

    restarted = start_worker(settings, tmp_path / "worker.log")
    try:  # a failed wait must not leave the worker running after the test
        sent = producer.result()
        expected = offline_profiles(sent, tiny_model_dir)
        wait_for_profiles(bootstrap, settings, expected, restarted)
        samples = scrape(settings.metrics_port)
    finally:
        restarted.stop()
    Trial(f"kill9-during-load seed={seed}", {
        "events": len(sent), "users": len(expected), "killed_after_consumed": kill_after,
        "redelivered_duplicates_skipped": metric(samples,
                                                 "portrait_duplicate_events_skipped_total"),
        "result": "exact",
    }).report()  # fmt: skip


def test_kill_9_before_the_first_commit_loses_nothing(
    broker: Any, settings: Settings, tmp_path: Path, tiny_model_dir: Path
) -> None:
    """The worker dies before it ever committed; the restarted one starts without offsets.

    All events are on the broker first, so the restarted worker fetches records while it is
    still recovering its table, and nothing tells it where to start but
    ``consumer_auto_offset_reset="earliest"``. One kill -9 trial above failed this way (the
    group had no committed offset, and the restarted worker lost a run of records per
    partition); this case makes that start deterministic.
    """
    bootstrap = broker.bootstrap_servers
    sent = produce(bootstrap, seeded_events(settings, 41, USERS, EVENTS))
    worker = start_worker(settings, tmp_path / "worker.log")
    wait_until(lambda: consumed(worker) >= 1, 60, "the first events consumed")
    kill9(worker)  # within the first commit interval: nothing committed yet
    assert committed_offsets(bootstrap, settings.app_id) == {}, worker.log_tail()

    restarted = start_worker(settings, tmp_path / "worker.log")
    try:
        wait_for_profiles(bootstrap, settings, offline_profiles(sent, tiny_model_dir), restarted)
    finally:
        restarted.stop()
    Trial("kill9-before-first-commit", {"events": len(sent), "result": "exact"}).report()


def test_three_clean_restarts_change_nothing(
    broker: Any, settings: Settings, tmp_path: Path, tiny_model_dir: Path
) -> None:
    bootstrap = broker.bootstrap_servers
    sent = produce(bootstrap, seeded_events(settings, 11, 50, 300))
    expected = offline_profiles(sent, tiny_model_dir)
    worker = start_worker(settings, tmp_path / "worker.log")
    updates = wait_for_profiles(bootstrap, settings, expected, worker)
    worker.stop()
    ends = end_of(sent)
    for restart in range(3):
        worker = start_worker(settings, tmp_path / "worker.log")
        ready = restart + 2  # faust says "Ready" once per run; the log is appended to
        wait_until(lambda w=worker, n=ready: ready_lines(w) == n, 60, "the restarted worker")
        time.sleep(COMMIT_INTERVAL_S)  # a redelivered event would be consumed and committed now
        samples = scrape(settings.metrics_port)
        worker.stop()
        assert metric(samples, "portrait_events_consumed_total") == 0, (restart, worker.log_tail())
        after = read_topic(bootstrap, settings.topics.profile_updates,
                           lambda r: len(r) >= len(updates), 30, settle_s=1)  # fmt: skip
        assert len(after) == len(updates), restart  # no new update, so no new version
        assert committed_offsets(bootstrap, settings.app_id) == ends
    Trial("clean-restart-no-input", {"restarts": 3, "result": "no change"}).report()


def test_peer_takes_over_a_killed_worker_then_the_group_scales_back_to_two(
    broker: Any, settings: Settings, tmp_path: Path, tiny_model_dir: Path
) -> None:
    bootstrap = broker.bootstrap_servers
    peer = peer_settings(settings, tmp_path / "state-b")
    first = start_worker(settings, tmp_path / "worker-a.log")
    second = start_worker(peer, tmp_path / "worker-b.log")
    events = seeded_events(settings, 21, USERS, EVENTS)
    producer = BackgroundProducer(bootstrap, events, pace_s=0.1)
    producer.start()
    wait_until(lambda: consumed(first) >= EVENTS // 4, 60, "the first worker consuming")
    kill9(first)
    sent = producer.result()
    expected = offline_profiles(sent, tiny_model_dir)
    wait_for_profiles(bootstrap, settings, expected, second)
    sent += _seal_changelog(bootstrap, settings)  # Tansu only; see the docstring

    first = start_worker(settings, tmp_path / "worker-a.log")  # scale back to two
    wait_until(lambda: ready_lines(first) == 2, 60, "the restarted worker has partitions again")
    more = produce(bootstrap, seeded_events(settings, 22, USERS, 400, first=EVENTS), pace_s=0.1)
    expected = offline_profiles(sent + more, tiny_model_dir)
    wait_for_profiles(bootstrap, settings, expected, second)
    both = consumed(first), consumed(second)
    first.stop()
    second.stop()
    assert all(n > 0 for n in both), both  # after scaling back, both workers consumed
    Trial("peer-takeover-and-scale-back", {"events": len(sent) + len(more),
                                           "consumed_after_rejoin": both,
                                           "result": "exact"}).report()  # fmt: skip


def _seal_changelog(bootstrap: str, settings: Settings) -> list[Sent]:
    """Make the last record of every changelog partition a batch of its own.

    The rejoining worker recovers its partitions from its own (stale) RocksDB store plus the
    changelog up to the highwater. The local Tansu broker reports the highwater as the last
    *batch's* base offset + 1 (docs/reliability.md, known broker faults), so a last batch of
    several records would be cut short and those users' latest versions lost: on Apache Kafka the
    highwater is exact and this step changes nothing. One event per partition, each waited for,
    makes the last changelog batch of each partition a single record.
    """
    sealed = []
    for partition in range(settings.topics.partitions):
        user = next(
            f"seal-{n}"
            for n in range(10_000)
            if user_partition(f"seal-{n}", settings.topics.partitions) == partition
        )
        event = Outgoing(settings.topics.behavior, user.encode(),
                         json.dumps(behavior(partition, user, "view")).encode())  # fmt: skip
        sealed += produce(bootstrap, [event])
        key = user.encode()
        updates = read_topic(bootstrap, settings.topics.profile_updates,
                             lambda r, k=key: any(x.key == k for x in r), 30)  # fmt: skip
        assert any(x.key == key for x in updates), user
    return sealed


def test_slow_batch_in_flight_is_not_skipped_after_kill_9(
    broker: Any, settings: Settings, tmp_path: Path, tiny_model_dir: Path
) -> None:
    bootstrap = broker.bootstrap_servers
    marker = "SLOW-BATCH-MARKER"
    worker = start_worker(settings, tmp_path / "worker.log", slow_marker=marker, slow_s=120)
    slow = [o for o in seeded_events(settings, 31, 20, 60) if o.topic == settings.topics.comments]
    slow_comment = _with_text(slow[0], f"{marker} this batch takes minutes")
    behind = seeded_events(settings, 32, 40, 400, first=1000)
    sent = produce(bootstrap, [slow_comment, *slow[1:], *behind])
    behaviour = [s for s in sent if s.topic == settings.topics.behavior]
    # behaviour events (another topic, all partitions) are profiled and committed meanwhile
    wait_until(lambda: committed_reached(bootstrap, settings.app_id, end_of(behaviour)), 60,
               "behaviour offsets committed while the comment batch is in flight")  # fmt: skip
    slow_sent = sent[0]
    committed = committed_offsets(bootstrap, settings.app_id)
    assert committed.get((slow_sent.topic, slow_sent.partition), 0) <= slow_sent.offset
    assert "slow_worker: sleeping" in worker.log_tail(20000)
    kill9(worker)  # the slow batch is still sleeping: it never finished

    restarted = start_worker(settings, tmp_path / "worker.log")
    expected = offline_profiles(sent, tiny_model_dir)
    wait_for_profiles(bootstrap, settings, expected, restarted)
    restarted.stop()
    Trial("slow-batch-then-kill9", {"events": len(sent), "result": "exact"}).report()


def _with_text(record: Any, text: str) -> Any:
    event = json.loads(record.value)
    event["text"] = text
    return type(record)(record.topic, record.key, json.dumps(event).encode())
