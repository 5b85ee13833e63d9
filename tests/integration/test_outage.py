"""Broker outages: a worker started before its broker, and a broker frozen mid-stream (the
worker turns not ready, ``portrait_broker_reachable`` 0, and ready again after it).

Each test runs its own embedded broker (the session broker is never paused or restarted): the
outage at start is a broker not started yet on the worker's bootstrap port; the outage mid-stream
freezes the broker process (SIGSTOP, then SIGCONT), which keeps its in-memory data.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from reliability_kit import (
    Trial,
    consumed,
    create_source_topics,
    iter_log_lines,
    metric,
    offline_profiles,
    produce,
    scrape,
    seeded_events,
    start_worker,
    wait_for_profiles,
    wait_until,
    worker_settings,
)

from stream.tools.broker import EmbeddedBroker
from stream.tools.worker_process import WorkerProcess, free_port

OUTAGE_S = 30.0
_NOT_REACHABLE = re.compile(r"broker not reachable .* attempt=(\d+) retry_in_s=(\d+)")


@pytest.fixture
def broker_port() -> int:
    """A free port for :func:`own_broker`."""
    return free_port()


@pytest.fixture
def own_broker(broker_port: int) -> Iterator[EmbeddedBroker]:
    """A broker on ``broker_port``, not started yet; stopped at the end."""
    broker = EmbeddedBroker(port=broker_port)
    try:
        yield broker
    finally:
        broker.stop()
        broker.remove_logs()


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) the process has used, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_worker_started_before_the_broker_retries_with_backoff_then_processes(
    own_broker: EmbeddedBroker, broker_port: int, unique_name: Callable[[str], str],
    tmp_path: Path, tiny_model_dir: Path,
) -> None:  # fmt: skip
    bootstrap = f"127.0.0.1:{broker_port}"
    settings = worker_settings(bootstrap, unique_name, tmp_path / "state", tiny_model_dir)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.start()
    started = time.monotonic()
    try:
        wait_until(lambda: _attempts(worker) != [], 60, "the first failed attempt", poll_s=0.5)
        pid, cpu_before, waiting_from = worker.pid, _cpu_s(worker.pid or 0), time.monotonic()
        while time.monotonic() - started < OUTAGE_S:
            worker.check_alive()  # no crash, so no crash loop
            time.sleep(1)
        cpu_used_s, waited_s = _cpu_s(pid or 0) - cpu_before, time.monotonic() - waiting_from
        own_broker.start()
        worker.wait_ready(90)
        assert worker.pid == pid  # the same process all along
        create_source_topics(settings)
        sent = produce(own_broker.bootstrap_servers, seeded_events(settings, 41, 20, 100))
        wait_for_profiles(own_broker.bootstrap_servers, settings,
                          offline_profiles(sent, tiny_model_dir), worker)  # fmt: skip
    finally:
        worker.stop()
    attempts = _attempts(worker)
    # one warning line per failed attempt, numbered 1, 2, 3 ..., delays doubling from 1 s
    assert [a for a, _ in attempts] == list(range(1, len(attempts) + 1)), attempts
    assert [d for _, d in attempts] == [min(2**i, 30) for i in range(len(attempts))], attempts
    assert len(attempts) >= 3, attempts
    lines = list(iter_log_lines(worker.log_path))
    reached = [i for i, line in enumerate(lines) if "broker reachable" in line]
    assert len(reached) == 1 and f"attempt={len(attempts) + 1}" in lines[reached[0]], reached
    ready = next(i for i, line in enumerate(lines) if "model ready" in line)
    assert len(lines[ready + 1 : reached[0]]) == len(attempts), lines[ready : reached[0] + 1]
    assert cpu_used_s < 0.5 * waited_s, (cpu_used_s, waited_s)  # waiting, not spinning
    Trial("broker-unreachable-at-start", {"outage_s": OUTAGE_S, "attempts": len(attempts),
                                          "cpu_s_while_waiting": round(cpu_used_s, 2),
                                          "result": "waited, then exact"}).report()  # fmt: skip


def _readyz(port: int) -> tuple[int, str]:
    """``/readyz``'s status and reason ("" when ready)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            return response.status, ""
    except urllib.error.HTTPError as exc:
        return exc.code, str(json.loads(exc.read()).get("reason", ""))


def _attempts(worker: WorkerProcess) -> list[tuple[int, int]]:
    """``(attempt, retry_in_s)`` of every "broker not reachable" line, in log order."""
    found = []
    for line in iter_log_lines(worker.log_path):
        match = _NOT_REACHABLE.search(line)
        if match:
            found.append((int(match[1]), int(match[2])))
    return found


def test_broker_frozen_mid_stream_loses_and_doubles_nothing(
    own_broker: EmbeddedBroker, unique_name: Callable[[str], str], tmp_path: Path,
    tiny_model_dir: Path,
) -> None:  # fmt: skip
    own_broker.start()
    bootstrap = own_broker.bootstrap_servers
    settings = worker_settings(bootstrap, unique_name, tmp_path / "state", tiny_model_dir)
    create_source_topics(settings)
    worker = start_worker(settings, tmp_path / "worker.log")
    try:
        first = produce(bootstrap, seeded_events(settings, 51, 100, 800))
        wait_until(lambda: consumed(worker) >= 200, 60, "processing under way")
        own_broker.pause()
        paused = time.monotonic()
        port = settings.metrics_port
        wait_until(lambda: _readyz(port)[1].startswith("broker not reachable"), 30,
                   "/readyz to say the broker is not reachable", poll_s=0.5)  # fmt: skip
        assert metric(scrape(port), "portrait_broker_reachable") == 0
        assert metric(scrape(port), "portrait_ready") == 0
        time.sleep(max(0.0, 15 - (time.monotonic() - paused)))  # longer than the 6 s session
        worker.check_alive()
        own_broker.resume()
        wait_until(lambda: _readyz(port) == (200, ""), 90, "ready again", poll_s=0.5)
        assert metric(scrape(port), "portrait_broker_reachable") == 1
        second = produce(bootstrap, seeded_events(settings, 52, 100, 400, first=800))
        expected = offline_profiles(first + second, tiny_model_dir)
        wait_for_profiles(bootstrap, settings, expected, worker)
        worker.check_alive()
    finally:
        worker.stop()
    events = len(first) + len(second)
    Trial("broker-frozen-15s-mid-stream", {"events": events, "result": "exact, stayed up"}).report()
