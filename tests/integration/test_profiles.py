"""``portrait profiles``: print updates, or one user's latest profile (tombstones honoured)."""

from __future__ import annotations

import json

from kafka import KafkaProducer
from typer.testing import CliRunner

from stream.tools.broker import create_topics
from stream.tools.cli import app
from stream.tools.follow import read_profiles


def _update(user: str, version: int, comments: int) -> bytes:
    profile = {"comment_count": comments, "label_counts": {"positive": comments}}
    return json.dumps({"user_id": user, "version": version, "updated_at": "2024-05-01T00:00:00Z",
                       "model_version": "m", "profile": profile}).encode()  # fmt: skip


def _produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes | None]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for key, value in records:
        producer.send(topic, key=key, value=value)
    producer.flush(timeout=10)
    producer.close()


def test_read_profiles_prints_all_then_one_users_latest(broker, unique_name) -> None:
    topic = unique_name("updates")
    create_topics(broker.bootstrap_servers, [topic], partitions=2)
    _produce(broker.bootstrap_servers, topic, [
        (b"u1", _update("u1", 1, 1)), (b"u2", _update("u2", 1, 1)), (b"u1", _update("u1", 2, 2)),
        (b"u1", _update("u1", 1, 1)),  # a stale redelivery: ignored for u1's latest
        (b"u2", None),  # u2 erased
    ])  # fmt: skip
    config = {"bootstrap_servers": broker.bootstrap_servers}

    everything: list[str] = []
    read_profiles(config, topic, emit=everything.append)
    one: list[str] = []
    read_profiles(config, topic, user_id="u1", emit=one.append)
    erased: list[str] = []
    read_profiles(config, topic, user_id="u2", emit=erased.append)

    assert len(everything) == 5
    assert [json.loads(line)["version"] for line in one] == [2]
    assert [json.loads(line) for line in erased] == [{"user_id": "u2", "profile": None}]


def test_profiles_command_for_unknown_user_exits_1(broker, unique_name, monkeypatch) -> None:
    topic = unique_name("updates")
    create_topics(broker.bootstrap_servers, [topic], partitions=1)
    _produce(broker.bootstrap_servers, topic, [(b"u1", _update("u1", 1, 1))])
    monkeypatch.setenv("PORTRAIT_KAFKA__BOOTSTRAP_SERVERS", broker.bootstrap_servers)
    monkeypatch.setenv("PORTRAIT_TOPICS__PROFILE_UPDATES", topic)

    found = CliRunner().invoke(app, ["profiles", "--user", "u1"])
    missing = CliRunner().invoke(app, ["profiles", "--user", "nobody"])

    assert found.exit_code == 0, found.output
    assert json.loads(found.stdout.strip().splitlines()[-1])["user_id"] == "u1"
    assert missing.exit_code == 1
    assert "no profile" in missing.output


def test_profiles_user_reads_only_the_keys_partition_and_hashes_the_id(
    broker, unique_name, monkeypatch
) -> None:
    from pydantic import SecretStr

    from stream.privacy import Pseudonymiser, user_partition
    from stream.settings import PseudonymisationSettings

    secret = "a-secret-of-at-least-16-chars"
    pseudonym = Pseudonymiser(PseudonymisationSettings(secret=SecretStr(secret)))("ana")
    topic = unique_name("updates")
    create_topics(broker.bootstrap_servers, [topic], partitions=4)
    home = user_partition(pseudonym, 4)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers)
    producer.send(topic, key=pseudonym.encode(), value=_update(pseudonym, 3, 3), partition=home)
    # a stray newer copy on another partition: a key-partition read never sees it
    producer.send(topic, key=pseudonym.encode(), value=_update(pseudonym, 9, 9),
                  partition=(home + 1) % 4)  # fmt: skip
    producer.flush(timeout=10)
    producer.close()
    monkeypatch.setenv("PORTRAIT_KAFKA__BOOTSTRAP_SERVERS", broker.bootstrap_servers)
    monkeypatch.setenv("PORTRAIT_TOPICS__PROFILE_UPDATES", topic)
    monkeypatch.setenv("PORTRAIT_PSEUDONYMISATION__SECRET", secret)

    found = CliRunner().invoke(app, ["profiles", "--user", "ana"])  # the raw id, as typed

    assert found.exit_code == 0, found.output
    latest = json.loads(found.stdout.strip().splitlines()[-1])
    assert (latest["user_id"], latest["version"]) == (pseudonym, 3)
