"""Segments on the local broker: a user's transitions appear on segment-events.v1 once per
crossing, with the profile version they happened at; a definition that does not compile stops
the worker at start-up (exit 2) with the segment's name and the error's position."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reliability_kit import (
    Outgoing,
    Trial,
    behavior,
    create_source_topics,
    produce,
    read_topic,
    start_worker,
    worker_settings,
)

from stream.tools.worker_process import WORKER_COMMAND

SEGMENTS = {"segments": [
    {"name": "spender", "description": "bought for more than 100",
     "enter": "profile.purchase_value_sum > 100.0",
     "exit": '"return" in profile.behavior_counts'},
]}  # fmt: skip


def _version(updates: list[Any]) -> int:
    return max((json.loads(r.value)["version"] for r in updates if r.value), default=0)


def _distinct(records: list[Any]) -> list[dict[str, Any]]:
    """The transitions as a consumer keeps them: one per (user, segment, version)."""
    kept: dict[tuple[str, str, int], dict[str, Any]] = {}
    for record in records:
        event = json.loads(record.value)
        kept.setdefault((event["user_id"], event["segment"], event["version"]), event)
    return list(kept.values())


def test_transitions_appear_once_per_crossing(
    broker: Any, unique_name: Callable[[str], str], tmp_path: Path, tiny_model_dir: Path
) -> None:
    bootstrap = broker.bootstrap_servers
    definitions = tmp_path / "segments.json"
    definitions.write_text(json.dumps(SEGMENTS))
    settings = worker_settings(bootstrap, unique_name, tmp_path / "state", tiny_model_dir,
                               segments={"path": definitions},
                               topics={"segment_events": unique_name("segments")})  # fmt: skip
    create_source_topics(settings)
    steps = [("purchase", 60.0), ("purchase", 60.0), ("view", None), ("return", None)]
    events = [behavior(i, "sam", action, **({"value": value} if value else {}))
              for i, (action, value) in enumerate(steps)]  # fmt: skip
    worker = start_worker(settings, tmp_path / "worker.log")
    try:
        for version, event in enumerate(events, start=1):  # each its own micro-batch
            produce(bootstrap, [Outgoing(settings.topics.behavior, b"sam",
                                         json.dumps(event).encode())])  # fmt: skip
            read_topic(bootstrap, settings.topics.profile_updates,
                       lambda r, v=version: _version(r) >= v, 60)  # fmt: skip
        found = read_topic(bootstrap, settings.topics.segment_events,
                           lambda r: len(_distinct(r)) >= 2, 90, settle_s=3.0)  # fmt: skip
    finally:
        worker.stop()
    transitions = _distinct(found)
    assert {r.key for r in found} == {b"sam"}
    assert [(t["transition"], t["version"]) for t in transitions] == [("entered", 2), ("exited", 4)]
    assert transitions[0]["values"] == {"behavior_counts": {"purchase": 2},
                                        "purchase_value_sum": 120.0}  # fmt: skip
    Trial("segment-transitions", {"events": len(events), "transitions": len(transitions),
                                  "result": "once per crossing"}).report()  # fmt: skip


def test_a_definition_that_does_not_compile_stops_the_start_up(tmp_path: Path) -> None:
    definitions = tmp_path / "segments.yaml"
    definitions.write_text("segments:\n  - name: typo\n    description: x\n"
                           "    enter: profile.comment_count >=\n")  # fmt: skip
    env = {"PORTRAIT_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9",
           "PORTRAIT_SEGMENTS__PATH": str(definitions), "PORTRAIT_STATE_DIR": str(tmp_path),
           "PORTRAIT_METRICS_PORT": "0", "PATH": "/usr/bin:/bin"}  # fmt: skip
    done = subprocess.run([*WORKER_COMMAND], env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "segment 'typo', enter condition does not compile" in done.stderr
    assert "1:25" in done.stderr and "Traceback" not in done.stderr


def test_a_definition_change_re_evaluates_stored_users_without_new_events(
    broker: Any, unique_name: Callable[[str], str], tmp_path: Path, tiny_model_dir: Path
) -> None:
    bootstrap = broker.bootstrap_servers
    definitions = tmp_path / "segments.json"
    settings = worker_settings(bootstrap, unique_name, tmp_path / "state", tiny_model_dir,
                               segments={"path": definitions},
                               topics={"segment_events": unique_name("segments")})  # fmt: skip
    create_source_topics(settings)
    spender = {"name": "spender", "description": "x", "enter": "profile.purchase_value_sum > 100.0"}
    definitions.write_text(json.dumps({"segments": [spender]}))
    worker = start_worker(settings, tmp_path / "worker.log")
    try:
        event = behavior(0, "sam", "purchase", value=60.0)
        produce(bootstrap, [Outgoing(settings.topics.behavior, b"sam", json.dumps(event).encode())])
        read_topic(bootstrap, settings.topics.profile_updates, lambda r: _version(r) >= 1, 60)
    finally:
        worker.stop()
    phases = [
        ({**spender, "enter": "profile.purchase_value_sum > 50.0"}, ("entered", 2)),  # changed
        ({**spender, "name": "other", "enter": "false"}, ("exited", 3)),  # spender removed
    ]
    for n, (definition, expected) in enumerate(phases, start=1):
        definitions.write_text(json.dumps({"segments": [definition]}))
        worker = start_worker(settings, tmp_path / f"worker{n}.log")
        try:
            found = read_topic(bootstrap, settings.topics.segment_events,
                               lambda r, n=n: len(_distinct(r)) >= n, 60, settle_s=2.0)  # fmt: skip
        finally:
            worker.stop()
        transitions = _distinct(found)  # at least once: a redelivered tick re-emits, same version
        assert len(transitions) == n, transitions
        assert (transitions[-1]["transition"], transitions[-1]["version"]) == expected
        assert transitions[-1]["segment"] == "spender"
    updates = read_topic(bootstrap, settings.topics.profile_updates, lambda r: _version(r) >= 3, 30)
    latest = max((json.loads(r.value) for r in updates), key=lambda u: u["version"])
    assert latest["profile"]["segments"] == {} and latest["profile"]["behavior_counts"] == {
        "purchase": 1
    }  # no event was added: only the memberships changed
