"""``portrait replay``: rows land on the source topics; bad rows are reported by line."""

from __future__ import annotations

import json
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition
from typer.testing import CliRunner

from stream.settings import load_settings
from stream.tools.broker import create_topics
from stream.tools.cli import app
from stream.tools.replay import replay_file

COMMENT = {"event_id": "c1", "user_id": "u1", "text": "great", "event_time": "2024-05-01T12:00:00Z"}
BEHAVIOUR = {"event_id": "b1", "user_id": "u2", "action": "purchase", "value": 9.5,
             "event_time": 1714564800000}  # fmt: skip


def _lines() -> list[str]:
    return [
        json.dumps(COMMENT),
        "not json at all",
        "",
        json.dumps(BEHAVIOUR),
        json.dumps({**COMMENT, "event_id": "c2", "rating": "five"}),
        json.dumps({**COMMENT, "event_id": "c3", "user_id": "u3"}),
    ]


def _read(bootstrap: str, topic: str, expected: int) -> list[tuple[bytes, bytes]]:
    """Records of a topic; stops at ``expected`` records (plus 0.5 s for any extra ones)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=5000)  # fmt: skip
    try:
        consumer.assign([TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)])
        records = []
        for record in consumer:
            records.append((record.key, record.value))
            if len(records) == expected:
                consumer.config["consumer_timeout_ms"] = 500
        return sorted(records)
    finally:
        consumer.close()


def _settings(broker, unique_name) -> object:
    topics = {"comments": unique_name("comments"), "behavior": unique_name("behavior")}
    create_topics(broker.bootstrap_servers, topics.values(), partitions=2)
    return load_settings(kafka={"bootstrap_servers": broker.bootstrap_servers}, topics=topics)


def test_replay_jsonl_routes_rows_and_reports_bad_lines(
    broker, unique_name, tmp_path: Path
) -> None:
    settings = _settings(broker, unique_name)
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(_lines()) + "\n")

    report = replay_file(path, settings, progress=False)

    assert [(row.line, row.reason) for row in report.invalid] == [
        (2, "not_json"),
        (5, "invalid_field"),
    ]
    assert "rating" in report.invalid[1].detail
    assert report.produced == 3 and report.failed == 0
    lines = _lines()
    assert _read(broker.bootstrap_servers, settings.topics.comments, 2) == sorted(
        [(b"u1", lines[0].encode()), (b"u3", lines[5].encode())]
    )
    assert _read(broker.bootstrap_servers, settings.topics.behavior, 1) == [
        (b"u2", lines[3].encode())
    ]


def test_replay_command_strict_exits_non_zero_and_prints_lines(
    broker, unique_name, tmp_path: Path, monkeypatch
) -> None:
    settings = _settings(broker, unique_name)
    monkeypatch.setenv("PORTRAIT_KAFKA__BOOTSTRAP_SERVERS", broker.bootstrap_servers)
    monkeypatch.setenv("PORTRAIT_TOPICS__COMMENTS", settings.topics.comments)
    monkeypatch.setenv("PORTRAIT_TOPICS__BEHAVIOR", settings.topics.behavior)
    path = tmp_path / "events.csv"
    path.write_text(
        "event_id,user_id,text,rating,event_time\n"
        "c1,u1,fine,4,2024-05-01T12:00:00Z\n"
        "c2,,no user,3,2024-05-01T12:00:00Z\n"
    )

    result = CliRunner().invoke(app, ["replay", str(path), "--strict", "--no-progress"])

    assert result.exit_code == 1, result.output
    assert "line 3: invalid_field" in result.output
    assert "produced 1 events" in result.output
    [(key, value)] = _read(broker.bootstrap_servers, settings.topics.comments, 1)
    assert key == b"u1" and json.loads(value)["rating"] == 4.0
