"""``portrait worker`` refuses to start with one clear message and exit code 2 (no broker)."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from stream.settings import Settings
from stream.tools.cli import app

# nothing listens here: every case below must fail before the worker contacts a broker
UNUSED_BROKER = "127.0.0.1:9"


def invoke(env: dict[str, str]) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["worker"], env=env)
    return result.exit_code, result.output


def test_worker_without_bootstrap_servers_exits_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PORTRAIT_KAFKA__BOOTSTRAP_SERVERS", raising=False)
    code, output = invoke({"PORTRAIT_KAFKA__BOOTSTRAP_SERVERS": ""})
    assert code == 2
    assert "PORTRAIT_KAFKA__BOOTSTRAP_SERVERS" in output


def test_worker_with_a_bad_setting_exits_2() -> None:
    code, output = invoke({"PORTRAIT_BATCH__MAX_WAIT_S": "-1"})
    assert code == 2
    assert "PORTRAIT_BATCH__MAX_WAIT_S: must be > 0 (got -1)" in output


def test_worker_with_a_missing_model_exits_2(tmp_path: Path) -> None:
    code, output = invoke({"PORTRAIT_KAFKA__BOOTSTRAP_SERVERS": UNUSED_BROKER,
                           "PORTRAIT_MODEL__PATH": str(tmp_path / "no-model")})  # fmt: skip
    assert code == 2
    assert "portrait export" in output


@pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA is available here"
)
def test_worker_asked_for_unavailable_cuda_exits_2(tiny_model_dir: Path) -> None:
    code, output = invoke({"PORTRAIT_KAFKA__BOOTSTRAP_SERVERS": UNUSED_BROKER,
                           "PORTRAIT_MODEL__PATH": str(tiny_model_dir),
                           "PORTRAIT_MODEL__DEVICE": "cuda"})  # fmt: skip
    assert code == 2
    assert "PORTRAIT_MODEL__DEVICE=cpu" in output


def test_worker_help_lists_every_setting_with_its_env_name() -> None:
    result = CliRunner().invoke(app, ["worker", "--help"], terminal_width=200)
    assert result.exit_code == 0
    names = ["PORTRAIT_APP_ID", "PORTRAIT_KAFKA__BOOTSTRAP_SERVERS",
             "PORTRAIT_KAFKA__SASL_PASSWORD", "PORTRAIT_BATCH__MAX_WAIT_S",
             "PORTRAIT_MODEL__DEVICE", "PORTRAIT_METRICS_PORT"]  # fmt: skip
    for name in names:
        assert name in result.output
    settings = Settings()
    leaves = 0
    for name in Settings.model_fields:
        section = getattr(settings, name)
        leaves += len(type(section).model_fields) if isinstance(section, BaseModel) else 1
    assert result.output.count("PORTRAIT_") >= leaves
