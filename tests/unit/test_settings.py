"""Settings: env names, nested delimiter, defaults, frozen, error messages naming the env var."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from models.contract.errors import ConfigError
from stream.settings import DEFAULT_MODEL_DIR, Settings, env_name, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No PORTRAIT_ variable from the caller's shell leaks into these tests."""
    import os

    for name in list(os.environ):
        if name.upper().startswith("PORTRAIT_"):
            monkeypatch.delenv(name)


def test_defaults_work_without_any_environment() -> None:
    s = load_settings()
    assert s.app_id == "portrait"
    assert s.kafka.bootstrap_servers == ""
    assert s.kafka.bootstrap_list == []
    assert s.topics.comments == "comments.v1"
    assert s.topics.profile_updates == "profile-updates.v1"
    assert s.topics.dead_letter == "portrait-dlq.v1"
    assert s.batch.max_batch_size == 64
    assert s.batch.max_wait_s == 0.02
    assert s.profile.half_life_s == 7 * 24 * 3600
    assert s.model.path is None and s.model.resolved_path == DEFAULT_MODEL_DIR
    assert s.metrics_port == 9464


def test_nested_env_names_with_double_underscore(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTRAIT_KAFKA__BOOTSTRAP_SERVERS", "broker-1:9092, broker-2:9093")
    monkeypatch.setenv("PORTRAIT_BATCH__MAX_WAIT_S", "0.5")
    monkeypatch.setenv("PORTRAIT_TOPICS__PARTITIONS", "8")
    monkeypatch.setenv("PORTRAIT_MODEL__DEVICE", "cpu")
    monkeypatch.setenv("PORTRAIT_MODEL__PATH", "/models/x")
    monkeypatch.setenv("PORTRAIT_PROFILE__HALF_LIFE_S", "3600")
    monkeypatch.setenv("PORTRAIT_APP_ID", "portrait-test")
    monkeypatch.setenv("PORTRAIT_LOG_LEVEL", "DEBUG")
    s = load_settings()
    assert s.kafka.bootstrap_list == ["broker-1:9092", "broker-2:9093"]
    assert s.batch.max_wait_s == 0.5
    assert s.topics.partitions == 8
    assert s.model.device == "cpu"
    assert s.model.resolved_path == Path("/models/x")
    assert s.profile.half_life_s == 3600.0
    assert s.app_id == "portrait-test"
    assert s.log_level == "debug"


def test_overrides_beat_environment_and_merge_with_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTRAIT_BATCH__MAX_WAIT_S", "0.5")
    monkeypatch.setenv("PORTRAIT_BATCH__MAX_BATCH_SIZE", "16")
    s = load_settings(batch={"max_wait_s": 0.1})
    assert s.batch.max_wait_s == 0.1
    assert s.batch.max_batch_size == 16


def test_settings_are_frozen() -> None:
    s = load_settings()
    with pytest.raises(ValidationError):
        s.app_id = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        s.batch.max_batch_size = 1  # type: ignore[misc]


def test_password_is_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTRAIT_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("PORTRAIT_KAFKA__SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("PORTRAIT_KAFKA__SASL_PASSWORD", "hunter2")
    s = load_settings()
    assert s.kafka.sasl_password is not None
    assert s.kafka.sasl_password.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(s) and "hunter2" not in str(s.model_dump())


@pytest.mark.parametrize(
    ("env", "value", "message"),
    [
        ("PORTRAIT_BATCH__MAX_WAIT_S", "-1", "PORTRAIT_BATCH__MAX_WAIT_S: must be > 0 (got -1)"),
        ("PORTRAIT_BATCH__MAX_WAIT_S", "11", "PORTRAIT_BATCH__MAX_WAIT_S: must be <= 10 (got 11)"),
        (
            "PORTRAIT_BATCH__MAX_BATCH_SIZE",
            "0",
            "PORTRAIT_BATCH__MAX_BATCH_SIZE: must be >= 1 (got 0)",
        ),
        (
            "PORTRAIT_BATCH__MAX_BATCH_SIZE",
            "many",
            "PORTRAIT_BATCH__MAX_BATCH_SIZE: input should be",
        ),
        (
            "PORTRAIT_PROFILE__HALF_LIFE_S",
            "0",
            "PORTRAIT_PROFILE__HALF_LIFE_S: must be > 0 (got 0)",
        ),
        ("PORTRAIT_MODEL__DEVICE", "tpu", "PORTRAIT_MODEL__DEVICE: must be one of 'auto', 'cpu'"),
        ("PORTRAIT_METRICS_PORT", "70000", "PORTRAIT_METRICS_PORT: must be <= 65535 (got 70000)"),
        (
            "PORTRAIT_KAFKA__BOOTSTRAP_SERVERS",
            "localhost",
            "PORTRAIT_KAFKA__BOOTSTRAP_SERVERS: must be",
        ),
        ("PORTRAIT_TOPICS__COMMENTS", "bad topic!", "PORTRAIT_TOPICS__COMMENTS: must be 1-249"),
        ("PORTRAIT_BATCH__MAX_WAITS", "1", "PORTRAIT_BATCH__MAX_WAITS: unknown setting"),
    ],
)
def test_invalid_value_names_env_var_and_fix(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, message: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert message in str(info.value)
    assert info.value.env_vars == (env,)
    assert isinstance(info.value.__cause__, ValidationError)


def test_all_problems_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTRAIT_BATCH__MAX_WAIT_S", "0")
    monkeypatch.setenv("PORTRAIT_TOPICS__PARTITIONS", "0")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert set(info.value.env_vars) == {"PORTRAIT_BATCH__MAX_WAIT_S", "PORTRAIT_TOPICS__PARTITIONS"}


def test_sasl_protocol_requires_mechanism(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTRAIT_KAFKA__SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    with pytest.raises(ConfigError, match="PORTRAIT_KAFKA__SASL_MECHANISM: required when"):
        load_settings()


def test_heartbeat_must_be_below_session_timeout() -> None:
    with pytest.raises(ConfigError, match="PORTRAIT_KAFKA__HEARTBEAT_INTERVAL_S: must be below"):
        load_settings(kafka={"session_timeout_s": 6, "heartbeat_interval_s": 6})


def test_secret_value_never_echoed_in_errors() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(kafka={"sasl_password": ["hunter2"]})
    assert "PORTRAIT_KAFKA__SASL_PASSWORD" in str(info.value)
    assert "hunter2" not in str(info.value)


def test_missing_ca_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="PORTRAIT_KAFKA__SSL_CAFILE"):
        load_settings(kafka={"ssl_cafile": tmp_path / "missing.pem"})


def test_env_name() -> None:
    assert env_name(("batch", "max_wait_s")) == "PORTRAIT_BATCH__MAX_WAIT_S"
    assert env_name(("metrics_port",)) == "PORTRAIT_METRICS_PORT"


def test_settings_class_reads_environment_directly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTRAIT_TOPICS__ERASURE", "erasure.v2")
    assert Settings().topics.erasure == "erasure.v2"
