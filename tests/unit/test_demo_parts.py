"""Pure parts of the demo: settings passed to the worker, latency figures, event interleaving."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stream.publish import ReplayRecord
from stream.settings import Settings, load_settings
from stream.tools.demo import _interleave
from stream.tools.demo_report import latency_percentiles
from stream.tools.follow import ProfileReceipt
from stream.tools.worker_process import settings_env


def test_settings_env_round_trips_through_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(
        kafka={"bootstrap_servers": "127.0.0.1:9092", "security_protocol": "SASL_PLAINTEXT",
               "sasl_mechanism": "PLAIN", "sasl_username": "u", "sasl_password": "secret"},
        batch={"max_wait_s": 0.05}, state_dir=Path("/tmp/state"), log_user_ids=True,
    )  # fmt: skip
    env = settings_env(settings)
    for name in [k for k in os.environ if k.startswith("PORTRAIT_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    assert env["PORTRAIT_KAFKA__SASL_PASSWORD"] == "secret"
    assert "PORTRAIT_MODEL__PATH" not in env  # None is left out
    assert Settings() == settings


def test_latency_is_receipt_minus_send_time_of_latest_covered_event() -> None:
    sent = {("c", 0, 4): 100.0, ("c", 1, 9): 101.0, ("b", 0, 2): 99.0}
    receipts = [
        ProfileReceipt(101.5, {"c:0": 4, "c:1": 9}),  # latest covered: c/1@9 sent at 101.0
        ProfileReceipt(100.25, {"c:0": 4, "b:0": 2}),  # latest covered: c/0@4 sent at 100.0
        ProfileReceipt(105.0, {"c:0": 999}),  # unknown offset: not measured
    ]

    percentiles = latency_percentiles(receipts, sent)

    assert percentiles == {50: pytest.approx(0.25), 95: pytest.approx(0.5), 99: pytest.approx(0.5)}
    assert latency_percentiles([], sent) == {}


def test_interleave_keeps_order_and_spreads_bad_records() -> None:
    good = [ReplayRecord(i, "t", b"k", b"g%d" % i) for i in range(12)]
    bad = [ReplayRecord(0, "t", b"k", b"bad%d" % i) for i in range(3)]

    mixed = list(_interleave(good, list(bad)))

    assert [r for r in mixed if r in good] == good
    positions = [i for i, r in enumerate(mixed) if r in bad]
    assert len(positions) == 3 and positions[0] > 0 and positions[-1] < len(mixed) - 1
