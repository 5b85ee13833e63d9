"""The model registry: stage checks, promote, rollback, the live model a worker loads."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from models.contract.errors import ConfigError, ModelLoadError
from stream.model_registry import Registry, RegistryError, load_configured_model
from stream.settings import ModelSettings, load_settings
from stream.tools.cli import app


def test_stage_promote_rollback(tmp_path: Path, named_tiny_model: Callable[..., Path]) -> None:
    registry = Registry(tmp_path / "registry")
    assert registry.stage(named_tiny_model("m1")) == "m1"
    staged = registry.pointer().to_dict()
    assert staged.pop("staged_at").endswith("Z")  # the shadow period's start, UTC
    assert staged == {"live": None, "candidate": "m1", "previous": []}
    registry.promote()
    registry.stage(named_tiny_model("m2"))
    assert registry.promote().to_dict() == {
        "live": "m2", "candidate": None, "previous": ["m1"], "staged_at": None,
    }  # fmt: skip
    assert registry.versions() == ["m1", "m2"]
    assert registry.rollback().live == "m1"
    loaded = load_configured_model(ModelSettings(registry=registry.root, device="cpu"))
    assert loaded.model_version == "m1"  # what a worker started now loads
    with pytest.raises(RegistryError, match="nothing to roll back"):
        registry.rollback()
    with pytest.raises(RegistryError, match="already the live model"):
        registry.stage(registry.model_dir("m1"))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"labels": ["positive", "neutral", "negative"]}, "labels"),
        ({"validation": None}, "no validation section"),
        ({"validation": {"failures": ["int8: label agreement 0.91 < 0.96"]}}, "gates failed"),
    ],
)
def test_a_bad_candidate_is_refused_and_the_live_model_stays(
    tmp_path: Path, named_tiny_model: Callable[..., Path], change: dict[str, object], reason: str
) -> None:
    registry = Registry(tmp_path / "registry")
    registry.stage(named_tiny_model("good"))
    registry.promote()
    with pytest.raises(RegistryError, match=reason):
        registry.stage(named_tiny_model("bad", **change))
    assert registry.pointer().to_dict() == {
        "live": "good", "candidate": None, "previous": [], "staged_at": None,
    }  # fmt: skip
    assert registry.versions() == ["good"]


def test_a_candidate_with_nan_outputs_is_refused(
    tmp_path: Path, nan_tiny_model: Callable[[str], Path]
) -> None:
    model = nan_tiny_model("nan-outputs")
    with pytest.raises(RegistryError, match="non-finite"):
        Registry(tmp_path / "registry").stage(model)


def test_a_tampered_graph_is_refused(tmp_path: Path, named_tiny_model: Callable[..., Path]) -> None:
    model = named_tiny_model("tampered")
    graph = model / "model.fp32.onnx"
    graph.write_bytes(graph.read_bytes()[:-1] + b"\0")
    with pytest.raises(RegistryError, match="does not load.*sha256"):
        Registry(tmp_path / "registry").stage(model)


def test_settings_name_one_model_source_and_an_empty_registry_is_a_load_error(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError, match="not both"):
        load_settings(model={"path": str(tmp_path), "registry": str(tmp_path)})
    with pytest.raises(ModelLoadError, match="no live model"):
        load_configured_model(ModelSettings(registry=tmp_path / "empty"))


def test_the_cli_walks_the_registry(tmp_path: Path, named_tiny_model: Callable[..., Path]) -> None:
    runner, reg = CliRunner(), str(tmp_path / "registry")
    model = named_tiny_model("m1")
    assert runner.invoke(app, ["model", "stage", str(model), "--registry", reg]).exit_code == 0
    assert runner.invoke(app, ["model", "promote", "--registry", reg]).exit_code == 0
    listed = runner.invoke(app, ["model", "list", "--json", "--registry", reg])
    assert json.loads(listed.stdout)["models"] == [{"version": "m1", "role": "live",
                                                    "macro_f1": None}]  # fmt: skip
    refused = runner.invoke(app, ["model", "rollback", "--registry", reg])
    assert refused.exit_code == 1 and "nothing to roll back" in refused.stderr
