"""A worker on the local broker turns ready once its partitions are assigned and recovered, and
its metrics include the process and platform collectors; stopped, it logs a summary."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reliability_kit import (
    Outgoing,
    comment,
    create_source_topics,
    latest_profiles,
    produce,
    read_topic,
    start_worker,
    worker_settings,
)


def readyz(port: int) -> tuple[int, dict[str, str]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_worker_becomes_ready_after_its_first_rebalance(
    broker: Any, unique_name: Callable[[str], str], tmp_path: Path, tiny_model_dir: Path
) -> None:
    settings = worker_settings(broker.bootstrap_servers, unique_name, tmp_path / "state",
                               tiny_model_dir)  # fmt: skip
    create_source_topics(settings)
    worker = start_worker(settings, tmp_path / "worker.log")
    try:
        deadline, state = time.monotonic() + 90, readyz(settings.metrics_port)
        while state[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
            state = readyz(settings.metrics_port)
        assert state == (200, {"status": "ready"}), worker.log_tail()
        with urllib.request.urlopen(
            f"http://127.0.0.1:{settings.metrics_port}/metrics", timeout=5
        ) as response:
            text = response.read().decode()
        assert "portrait_ready 1.0" in text
        # the process and platform collectors are on the worker's registry too
        assert "process_resident_memory_bytes" in text and "python_info{" in text
        users = [f"u{i}" for i in range(3)]
        sent = [json.dumps(comment(i, u, "great")).encode() for i, u in enumerate(users)]
        topic = settings.topics.comments
        pairs = zip(users, sent, strict=True)
        produce(broker.bootstrap_servers, [Outgoing(topic, u.encode(), v) for u, v in pairs])
        read_topic(broker.bootstrap_servers, settings.topics.profile_updates,
                   lambda records: set(users) <= set(latest_profiles(records)), 60)  # fmt: skip
    finally:
        worker.stop()
    # SIGTERM: the worker says what it did before it exits
    assert "worker stopping after" in worker.log_tail()
    assert "consumed=3 dead_lettered=0 profile_updates=3" in worker.log_tail()
