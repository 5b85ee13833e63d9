"""Privacy end to end: ``portrait forget``, pseudonymisation, and what logs and metrics may hold.

``portrait forget USER`` runs as a subprocess right after the user's events were produced, while
the worker is still busy with them: it waits until the worker has committed them, then writes the
erasure request. The worker must delete the profile (a tombstone on the table's changelog), write
a tombstone on ``profile-updates.v1``, keep the erasure across a kill -9, and start a new profile
from the user's later events only. With pseudonymisation on, the raw user id must appear nowhere
in the worker's state, output or logs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from reliability_kit import (
    Outgoing,
    Trial,
    behavior,
    comment,
    create_source_topics,
    iter_log_lines,
    kill9,
    offline_profiles,
    produce,
    read_topic,
    scrape,
    seeded_events,
    start_worker,
    wait_for_profiles,
    worker_settings,
)

from stream.app import changelog_topic_name
from stream.privacy import ErasureTimeoutError, Pseudonymiser, request_erasure
from stream.settings import Settings
from stream.tools.worker_process import settings_env

FORGOTTEN = "u007"
SECRET = "test-only-pseudonymisation-secret"


def _forget(settings: Settings, user_id: str) -> dict[str, Any]:
    """Run ``portrait forget USER_ID`` with the worker's settings; its JSON receipt."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTRAIT_")}
    done = subprocess.run(
        [sys.executable, "-c", "from stream.tools.cli import main; main()", "forget", user_id,
         "--wait-s", "60"],
        env={**env, **settings_env(settings)}, capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    receipt: dict[str, Any] = json.loads(done.stdout)
    return receipt


def _tombstoned(key: bytes) -> Callable[[list[Any]], bool]:
    return lambda records: any(r.key == key and r.value is None for r in records)


@pytest.mark.parametrize("pseudonymised", [False, True], ids=["plain-ids", "pseudonymised"])
def test_forget_erases_the_profile_and_later_events_start_a_new_one(
    pseudonymised: bool, broker: Any, unique_name: Callable[[str], str], tmp_path: Path,
    tiny_model_dir: Path,
) -> None:  # fmt: skip
    bootstrap = broker.bootstrap_servers
    extra = {"pseudonymisation": {"secret": SECRET}} if pseudonymised else {}
    settings = worker_settings(bootstrap, unique_name, tmp_path / "state", tiny_model_dir,
                               **extra)  # fmt: skip
    pseudonym = Pseudonymiser(settings.pseudonymisation)
    key = pseudonym(FORGOTTEN).encode()
    create_source_topics(settings)
    worker = start_worker(settings, tmp_path / "worker.log")
    before = produce(bootstrap, seeded_events(settings, 61, 10, 400))
    assert sum(s.key == FORGOTTEN.encode() for s in before) > 10
    receipt = _forget(settings, FORGOTTEN)  # waits until the worker committed `before`

    updates = read_topic(bootstrap, settings.topics.profile_updates, _tombstoned(key), 60)
    assert _tombstoned(key)(updates), worker.log_tail()
    changelog = read_topic(bootstrap, changelog_topic_name(settings.app_id), _tombstoned(key), 30)
    assert _tombstoned(key)(changelog)
    kill9(worker)  # the erasure must survive a crash (redelivered or not)

    worker = start_worker(settings, tmp_path / "worker.log")
    after = produce(bootstrap, seeded_events(settings, 62, 10, 200, first=400))
    expected = offline_profiles(before + after, tiny_model_dir, pseudonym)
    expected[key.decode()] = offline_profiles(
        [s for s in after if s.key == FORGOTTEN.encode()], tiny_model_dir, pseudonym
    )[key.decode()]  # the forgotten user's new profile holds only the later events
    updates = wait_for_profiles(bootstrap, settings, expected, worker)
    worker.stop()
    if pseudonymised:
        raw = re.compile(rb"\bu0\d\d\b")
        changelog = read_topic(bootstrap, changelog_topic_name(settings.app_id),
                               lambda r: False, 3)  # fmt: skip
        for record in updates + changelog:
            assert not raw.search(record.key) and not raw.search(record.value or b""), record
        log = "\n".join(iter_log_lines(worker.log_path))
        assert not re.search(r"\bu0\d\d\b", log)
    Trial(f"forget {'pseudonymised' if pseudonymised else 'plain'}", {
        "erasure_partition": receipt["partition"], "events_before": len(before),
        "events_after": len(after), "result": "tombstones on changelog and updates; new profile",
    }).report()  # fmt: skip


def test_logs_at_debug_carry_no_comment_text_and_metrics_no_user_or_item_id(
    broker: Any, unique_name: Callable[[str], str], tmp_path: Path, tiny_model_dir: Path
) -> None:
    bootstrap = broker.bootstrap_servers
    settings = worker_settings(bootstrap, unique_name, tmp_path / "state", tiny_model_dir,
                               log_level="debug")  # fmt: skip
    create_source_topics(settings)
    texts = [f"private words number {i} zebracorn" for i in range(30)]
    records = []
    for i, text in enumerate(texts):
        user, item = f"person-{i % 6}-secretid", f"item-{i}-secretid"
        records += [
            Outgoing(settings.topics.comments, user.encode(),
                     json.dumps(comment(i, user, text, item_id=item, category="books")).encode()),
            Outgoing(settings.topics.behavior, user.encode(),
                     json.dumps(behavior(i, user, "view", item_id=item)).encode()),
        ]  # fmt: skip
    records.append(
        Outgoing(
            settings.topics.comments,
            b"person-0-secretid",  # dead-lettered
            b'{"user_id": "person-0-secretid", "text": "zebracorn poison"}',
        )
    )
    sent = produce(bootstrap, records)
    worker = start_worker(settings, tmp_path / "worker.log")
    try:
        wait_for_profiles(bootstrap, settings, offline_profiles(sent, tiny_model_dir), worker)
        _forget(settings, "person-1-secretid")
        read_topic(bootstrap, settings.topics.profile_updates,
                   _tombstoned(b"person-1-secretid"), 30)  # fmt: skip
        samples = scrape(settings.metrics_port)
    finally:
        worker.stop()
    log = "\n".join(iter_log_lines(worker.log_path))
    assert "[DEBUG]" in log  # the worker did log at debug level
    assert "zebracorn" not in log  # no comment text, not even of the dead-lettered event
    assert "secretid" not in log  # no user or item id (PORTRAIT_LOG_USER_IDS is off)
    labels = {value for (_, pairs), _ in samples.items() for _, value in pairs}
    assert not [v for v in labels if "secretid" in v or "zebracorn" in v], labels
    Trial("privacy-logs-and-metrics", {"log_lines": log.count("\n"), "label_values": len(labels),
                                       "result": "no text, no ids"}).report()  # fmt: skip


def test_forget_writes_nothing_while_the_worker_has_not_caught_up(
    broker: Any, unique_name: Callable[[str], str], tmp_path: Path, tiny_model_dir: Path
) -> None:
    bootstrap = broker.bootstrap_servers
    settings = worker_settings(bootstrap, unique_name, tmp_path / "state", tiny_model_dir)
    create_source_topics(settings)
    produce(bootstrap, seeded_events(settings, 71, 1, 3))  # no worker runs: nothing committed
    with pytest.raises(ErasureTimeoutError) as info:
        request_erasure(settings, "u000", wait_s=1.0)
    assert sum(info.value.behind.values()) == 3, info.value.behind
    assert read_topic(bootstrap, settings.topics.erasure, lambda r: False, 2) == []
