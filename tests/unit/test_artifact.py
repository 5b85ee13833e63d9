"""The committed model artifact (models/artifact): files, manifest, and its measured quality."""

from __future__ import annotations

import json

import pytest

from export.manifest import read_manifest, verify_files
from stream.classifier import SentimentClassifier
from stream.settings import DEFAULT_MODEL_DIR

ARTIFACT = DEFAULT_MODEL_DIR


def test_committed_files_match_the_manifest_hashes() -> None:
    assert verify_files(ARTIFACT) == []
    manifest = read_manifest(ARTIFACT)
    assert set(manifest["files"]) == {"model.int8.onnx", "tokenizer.json"}
    assert manifest["labels"] == ["negative", "neutral", "positive"]


def test_manifest_records_training_validation_and_evaluation() -> None:
    manifest = read_manifest(ARTIFACT)
    assert manifest["training_data"]["sha256"]
    assert manifest["training"]["config"]["max_seq_len"] == manifest["max_seq_len"]
    validation = manifest["validation"]
    assert validation["failures"] == []
    assert validation["max_abs_diff"]["fp32"] <= 1e-4
    assert validation["label_agreement"]["int8"] >= 0.96
    assert manifest["evaluation"]["int8"]["macro_f1"] >= 0.80


def test_worker_loads_the_committed_model_by_default() -> None:
    clf = SentimentClassifier.load(device="cpu")
    assert clf.variant == "int8"
    probs = clf.predict_proba(["the crew was wonderful, thank you!", "lost my bag again. furious."])
    assert probs.argmax(1).tolist() == [2, 0]


@pytest.mark.slow
def test_committed_graph_reproduces_the_manifest_macro_f1() -> None:
    """Re-measures test-split macro-F1 with the committed graph through the worker's runtime."""
    from models.data import load, split
    from models.evaluate import model_logits, report_for
    from models.metrics import softmax

    manifest = read_manifest(ARTIFACT)
    test = split(
        load(manifest["training_data"]["source"]), seed=manifest["training"]["config"]["seed"]
    ).test
    logits = model_logits(ARTIFACT, [r.text for r in test], variant="int8", progress=False)
    report = report_for(softmax(logits), test)
    assert report["macro_f1"] == pytest.approx(
        manifest["evaluation"]["int8"]["macro_f1"], abs=0.005
    )
    print(json.dumps({"macro_f1": report["macro_f1"], "accuracy": report["accuracy"]}))
