"""Topics the worker creates carry their configs; a non-compacted profile-updates topic is named
with its fix. The same configs as ops/kafka/create-topics.sh."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

import stream.worker as worker
from models.contract.errors import ConfigError
from stream.settings import load_settings
from stream.worker import (
    DEAD_LETTER_CONFIG,
    PROFILE_UPDATES_CONFIG,
    REPARTITION_CONFIG,
    compaction_problem,
)

SCRIPT = Path(__file__).resolve().parents[2] / "ops" / "kafka" / "create-topics.sh"


def test_worker_creates_each_topic_with_its_configs(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[list[str], dict[str, str]]] = []

    def create(servers: Any, names: list[str], partitions: int, replication: int,
               configs: dict[str, str], **kw: Any) -> list[str]:  # fmt: skip
        calls.append((list(names), dict(configs)))
        return list(names)

    settings = load_settings(kafka={"bootstrap_servers": "127.0.0.1:9"})
    monkeypatch.setattr(worker, "create_topics", create)
    monkeypatch.setattr(worker, "_partition_counts", lambda s, names: {})
    created = worker.ensure_topics(settings)
    topics = settings.topics
    configs = {name: cfg for names, cfg in calls for name in names}
    assert configs[topics.profile_updates] == {"cleanup.policy": "compact"}
    assert configs[topics.dead_letter] == {"retention.ms": "1209600000"}
    assert configs[topics.comments] == configs[topics.behavior] == configs[topics.erasure] == {}
    for repartition in settings.repartition_topics().values():
        assert configs[repartition] == REPARTITION_CONFIG
    assert set(created) == set(configs)


def test_configs_agree_with_the_compose_topic_script() -> None:
    script = SCRIPT.read_text()
    profile = re.search(r"PROFILE_UPDATES:\?\}\" --config (\S+)=(\S+)", script)
    dead = re.search(r"DEAD_LETTER:\?\}\" --config (\S+)=(\S+)", script)
    repartition = re.search(r"-repartition\" --config (\S+)=(\S+)", script)
    assert profile and dict([profile.groups()]) == PROFILE_UPDATES_CONFIG
    assert dead and dict([dead.groups()]) == DEAD_LETTER_CONFIG
    assert repartition and dict([repartition.groups()]) == REPARTITION_CONFIG


@pytest.mark.parametrize(
    ("reported", "problem"),
    [
        ({"cleanup.policy": "compact"}, False),
        ({"cleanup.policy": "compact,delete"}, False),
        ({}, False),  # the broker reports nothing (the local Tansu): not checkable, no warning
        ({"cleanup.policy": "delete"}, True),
    ],
)
def test_compaction_problem_names_the_fix(reported: dict[str, str], problem: bool) -> None:
    found = compaction_problem("profile-updates.v1", reported, "kafka:9092")
    assert (found is not None) == problem
    if found:
        assert "cleanup.policy=delete" in found
        assert "--entity-name profile-updates.v1 --add-config cleanup.policy=compact" in found


@pytest.mark.parametrize("required", [False, True])
def test_an_existing_topic_without_compaction_warns_or_refuses(
    required: bool, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_settings(kafka={"bootstrap_servers": "127.0.0.1:9"},
                             topics={"require_compaction": required})  # fmt: skip
    monkeypatch.setattr(worker, "create_topics", lambda *a, **kw: [])  # every topic exists
    monkeypatch.setattr(worker, "_partition_counts", lambda s, names: {})
    monkeypatch.setattr(worker, "describe_topic_configs",
                        lambda *a, **kw: {"cleanup.policy": "delete"})  # fmt: skip
    if required:
        with pytest.raises(ConfigError) as info:
            worker.ensure_topics(settings)
        assert "PORTRAIT_TOPICS__REQUIRE_COMPACTION" in str(info.value)
        assert "--add-config cleanup.policy=compact" in str(info.value)
    else:
        worker.ensure_topics(settings)
        assert "--add-config cleanup.policy=compact" in caplog.text
