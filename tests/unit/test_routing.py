"""Routed model: the script rule, the routed manifest, and per-text routing through real graphs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from models.contract.classifier import SentimentClassifier
from models.contract.errors import ModelLoadError
from models.contract.manifest import file_sha256
from models.contract.routing import RULE, RoutedClassifier, load_model, non_latin_share, routing_of

TEXTS = [
    "Great phone, the battery lasts two days",
    "这个产品很好用，但是价格有点贵",
    "这个手机 good but 太贵",  # mixed languages: goes whole to the multilingual route
    "I love my new 小米 phone, the battery is great",  # a Chinese name in English text
    "Отличный товар",
    "😀😀 !!! 123",
    "Café crème brûlée",
    "",
]
EXPECTED_ROUTES = ["latin", "other", "other", "latin", "other", "latin", "latin", "latin"]


@pytest.mark.parametrize(
    ("text", "share"),
    [
        ("hello world", 0.0),
        ("这个产品很好用", 1.0),
        ("好 ab", 1 / 3),  # letters only: the space and digits do not count
        ("12345 !!! 😀", 0.0),  # no letters
        ("Ça coûte cher", 0.0),  # Latin-1 and Latin Extended letters are Latin
        ("", 0.0),
    ],
)
def test_non_latin_share_counts_letters_only(text: str, share: float) -> None:
    assert non_latin_share(text) == pytest.approx(share)


def test_rule_looks_at_a_bounded_prefix() -> None:
    assert non_latin_share("a" * 600 + "好" * 10_000) == 0.0


def _routed(tmp_path: Path, tiny_model_dir: Path, threshold: float = 0.2) -> Path:
    """A routed directory whose routes are the tiny model, ``other`` cut to 4 tokens a text (so
    the two give different probabilities for a longer text)."""
    out = tmp_path / "routed"
    shutil.copytree(tiny_model_dir, out / "latin")
    shutil.copytree(tiny_model_dir, out / "other")
    sub = json.loads((out / "other" / "manifest.json").read_text())
    sub["max_seq_len"] = 4
    (out / "other" / "manifest.json").write_text(json.dumps(sub))
    manifest = {
        "model_version": "tiny-routed",
        "labels": ["negative", "neutral", "positive"],
        "routing": {
            "rule": RULE,
            "threshold": threshold,
            "routes": {"latin": "latin", "other": "other"},
        },
        "files": {
            f"{n}/manifest.json": file_sha256(out / n / "manifest.json") for n in ("latin", "other")
        },
    }
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def test_routed_model_sends_each_text_to_its_scripts_graph(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    model = load_model(_routed(tmp_path, tiny_model_dir), device="cpu")
    assert isinstance(model, RoutedClassifier)
    assert model.route(TEXTS) == EXPECTED_ROUTES
    assert model.model_version == "tiny-routed" and model.labels == (
        "negative",
        "neutral",
        "positive",
    )
    # each row equals its route's graph on that text alone: no dependence on the batch
    proba = model.predict_proba(TEXTS)
    latin, other = (model.routes[n].predict_proba(TEXTS) for n in ("latin", "other"))
    assert np.abs(latin - other).max(axis=1)[:2].min() > 1e-4  # the routes differ on these
    for text, route, row in zip(TEXTS, EXPECTED_ROUTES, proba, strict=True):
        alone = model.routes[route].predict_proba([text])[0]
        np.testing.assert_allclose(row, alone, atol=1e-6)
    assert proba.shape == (len(TEXTS), 3) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert model.predict_proba([]).shape == (0, 3)
    calls = model.graph_calls(TEXTS)
    assert {id(s) for s, _ in calls} == {id(c.session) for c in model.routes.values()}
    assert sum(len(feeds["input_ids"]) for _, feeds in calls) == len(TEXTS)


def test_a_single_graph_directory_loads_as_before(tiny_model_dir: Path) -> None:
    assert isinstance(load_model(tiny_model_dir, device="cpu"), SentimentClassifier)
    assert routing_of(tiny_model_dir) is None


def test_a_replaced_route_is_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    routed = _routed(tmp_path, tiny_model_dir)
    sub = routed / "other" / "manifest.json"
    sub.write_text(sub.read_text().replace('"model_version"', '"model_version_old"', 1))
    with pytest.raises(ModelLoadError, match="other/manifest.json is missing or does not match"):
        load_model(routed, device="cpu")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rule": "language-id"}, "unknown rule"),
        ({"routes": {"latin": "latin"}}, "routes must be exactly"),
        ({"threshold": 0}, "threshold must be in"),
        ({"threshold": "high"}, "could not convert"),
    ],
)
def test_a_malformed_routing_is_refused(
    tmp_path: Path, tiny_model_dir: Path, change: dict[str, object], message: str
) -> None:
    routed = _routed(tmp_path, tiny_model_dir)
    manifest = json.loads((routed / "manifest.json").read_text())
    manifest["routing"].update(change)
    (routed / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match=message):
        load_model(routed, device="cpu")


def test_routes_with_different_labels_are_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    routed = _routed(tmp_path, tiny_model_dir)
    sub = routed / "other" / "manifest.json"
    manifest = json.loads(sub.read_text())
    manifest["labels"] = ["bad", "good", "meh"]
    sub.write_text(json.dumps(manifest))
    top = json.loads((routed / "manifest.json").read_text())
    top["files"]["other/manifest.json"] = file_sha256(sub)
    (routed / "manifest.json").write_text(json.dumps(top))
    with pytest.raises(ModelLoadError, match="routes disagree on labels"):
        load_model(routed, device="cpu")
