"""Poison events go to the dead-letter topic; odd but valid texts are profiled.

Each poison record (issue item 5) is sent between two valid events of the same user and key, so
it sits in the middle of that user's partition. The worker must dead-letter it with its original
key and value bytes and a reason, profile the valid events around it exactly, keep committing
(the group's committed offsets reach the end of every source partition) and count it by reason.
Text edge cases (item 6) are valid comments: profiled, never dead-lettered. Input semantics:
blank ids and event times out of range or without a UTC offset are poison too, and an event
resent with its ``event_id`` at a new offset is counted once.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reliability_kit import (
    Outgoing,
    Trial,
    behavior,
    comment,
    committed_reached,
    create_source_topics,
    end_of,
    metric,
    offline_profiles,
    produce,
    read_topic,
    scrape,
    start_worker,
    wait_for_profiles,
    wait_until,
    worker_settings,
)

from stream.settings import Settings


def _without(event: dict[str, Any], field: str) -> bytes:
    return json.dumps({k: v for k, v in event.items() if k != field}).encode()


def _at(event: dict[str, Any], user: str, when: str) -> bytes:
    return json.dumps({**event, "user_id": user, "event_time": when}).encode()


def _poison(settings: Settings) -> list[tuple[str, str, bytes | None, str]]:
    """``(topic, user, value, reason)`` of every poison record of the issue, item 5."""
    c, b = settings.topics.comments, settings.topics.behavior
    valid = comment(900, "x", "fine")
    return [
        (c, "p-empty", b"", "empty_value"),
        (c, "p-null", None, "tombstone"),
        (c, "p-notjson", b"not json", "not_json"),
        (c, "p-bytes", b"\xff\xfe\x7b", "not_utf8"),
        (c, "p-array", b'[{"user_id": "p-array"}]', "not_an_object"),
        (c, "p-string", b'"a bare JSON string"', "not_an_object"),
        (c, "p-nouser", _without({**valid, "user_id": "p-nouser"}, "user_id"), "invalid_field"),
        (c, "p-rating", json.dumps({**valid, "user_id": "p-rating", "rating": "five"}).encode(),
         "invalid_field"),
        (c, "p-notext", _without({**valid, "user_id": "p-notext"}, "text"), "invalid_field"),
        (c, "p-notime", _without({**valid, "user_id": "p-notime"}, "event_time"),
         "invalid_field"),
        (b, "p-action", json.dumps(behavior(901, "p-action", "teleport")).encode(),
         "invalid_field"),
        # input semantics: blank ids, event times out of range or not RFC 3339 with an offset
        (c, "   ", json.dumps({**valid, "user_id": "   "}).encode(), "invalid_field"),
        (c, "p-blankid", json.dumps({**valid, "user_id": "p-blankid", "event_id": " \t"}).encode(),
         "invalid_field"),
        (c, "p-future", _at(valid, "p-future", "9999-12-31T23:59:59Z"), "event_time_out_of_range"),
        (c, "p-ancient", _at(valid, "p-ancient", "0001-01-01T00:00:00Z"),
         "event_time_out_of_range"),
        (b, "p-ahead", _at(behavior(902, "p-ahead", "view"), "p-ahead", "2999-12-31T00:00:00Z"),
         "event_time_out_of_range"),
        (c, "p-naive", _at(valid, "p-naive", "2026-11-29T18:04:05"), "invalid_field"),
        (c, "p-digits", _at(valid, "p-digits", "20261129"), "invalid_field"),
    ]  # fmt: skip


EDGE_TEXTS = {
    "t-empty": "",
    "t-blank": "   \n\t",
    "t-huge": "word " * 180_000,  # 900 kB, truncated for the model
    "t-emoji": "😀🔥👍🏽🎉",
    "t-mixed": "质量很好, but the delivery took three weeks 太慢了",
}


def _records(settings: Settings) -> list[Outgoing]:
    """Valid, poison, valid per poisoned user; valid, edge-case text, valid per edge user."""
    out: list[Outgoing] = []
    for i, (topic, user, value, _) in enumerate(_poison(settings)):
        make = comment if topic == settings.topics.comments else behavior
        extra = {"text": "before"} if make is comment else {"action": "view"}
        neighbour = user if user.strip() else "p-blankuser"  # a blank id has no valid events
        around = [make(10 * i + j, neighbour, **extra) for j in (1, 2)]
        out += [Outgoing(topic, neighbour.encode(), json.dumps(around[0]).encode()),
                Outgoing(topic, user.encode(), value),
                Outgoing(topic, neighbour.encode(), json.dumps(around[1]).encode())]  # fmt: skip
    resent = json.dumps(comment(700, "d-resent", "great")).encode()  # one event_id, twice
    out += [Outgoing(settings.topics.comments, b"d-resent", resent)] * 2
    texts = [*EDGE_TEXTS.items(), ("t-surrogate", None)]
    for i, (user, text) in enumerate(texts, start=500):
        middle = json.dumps(comment(i, user, text or "", category="books")).encode()
        if text is None:  # a JSON \ud83d escape: a lone surrogate, replaced, then classified
            middle = middle.replace(b'"text": ""', b'"text": "\\ud83d lone surrogate"')
        out += [Outgoing(settings.topics.comments, user.encode(),
                         json.dumps(comment(i + 100, user, "ok")).encode()),
                Outgoing(settings.topics.comments, user.encode(), middle),
                Outgoing(settings.topics.behavior, user.encode(),
                         json.dumps(behavior(i, user, "like")).encode())]  # fmt: skip
    return out


def test_poison_events_are_dead_lettered_and_the_events_around_them_profiled(
    broker: Any, unique_name: Callable[[str], str], tmp_path: Path, tiny_model_dir: Path
) -> None:
    bootstrap = broker.bootstrap_servers
    settings = worker_settings(bootstrap, unique_name, tmp_path / "state", tiny_model_dir)
    create_source_topics(settings)
    sent = produce(bootstrap, _records(settings))
    expected = offline_profiles(sent, tiny_model_dir)
    poison = _poison(settings)
    assert len(expected) == len(poison) + len(EDGE_TEXTS) + 2  # every user keeps a profile
    assert expected["d-resent"].comment_count == 1

    worker = start_worker(settings, tmp_path / "worker.log")
    try:
        wait_for_profiles(bootstrap, settings, expected, worker)
        wait_until(lambda: committed_reached(bootstrap, settings.app_id, end_of(sent)), 30,
                   "committed offsets at the end of every source partition")  # fmt: skip
        samples = scrape(settings.metrics_port)
        worker.check_alive()
    finally:
        worker.stop()
    for user, text in EDGE_TEXTS.items():  # the odd texts were classified and counted
        assert expected[user].comment_count == 2, (user, len(text))
    assert expected["t-surrogate"].comment_count == 2

    dead = read_topic(bootstrap, settings.topics.dead_letter, lambda r: len(r) >= len(poison),
                      30, settle_s=1)  # fmt: skip
    assert len(dead) == len(poison), [dict(r.headers) for r in dead]
    by_key = {r.key.decode(): r for r in dead}
    for topic, user, value, reason in poison:
        record = by_key[user]
        headers = dict(record.headers)
        assert record.value == value, user  # the original bytes (None for the tombstone)
        assert headers["portrait.error.reason"] == reason.encode(), (user, headers)
        assert headers["portrait.source.topic"] == topic.encode()
        assert headers["portrait.error.detail"]
    reasons = Counter(reason for *_, reason in poison)
    for reason, count in reasons.items():
        assert metric(samples, "portrait_events_dead_lettered_total", reason=reason) == count
    assert metric(samples, "portrait_duplicate_events_skipped_total", reason="event_id") == 1
    Trial("poison-events", {"kinds": len(poison), "edge_texts": len(EDGE_TEXTS) + 1,
                            "dead_lettered": len(dead), "result": "dead-lettered, neighbours "
                            "profiled, offsets committed to the end"}).report()  # fmt: skip
