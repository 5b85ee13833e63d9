"""Precision and recall of the mixed-sentiment flag on the hand-labelled sets in ``models/mixed/``.

The sets (``eval_en.jsonl``, ``eval_zh.jsonl``; guideline and composition in
``models/mixed/README.md``) were written for this project and labelled by one annotator. Each
comment goes through the worker's own path: :func:`models.contract.mixed.classify_with_clauses`
with the
exported model, so the figures are those of the shipped rule, threshold and graph. The report
also gives precision and recall at other thresholds, to show what the threshold trades.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from models.contract.mixed import DEFAULT_THRESHOLD, ClauseBatch, MixedRule
from models.contract.routing import load_model

__all__ = ["MIXED_SETS", "evaluate_mixed", "flag_report", "format_mixed", "load_mixed_set"]

MIXED_SETS = Path(__file__).parent / "mixed"
"""Directory of the hand-labelled sets, one ``eval_<lang>.jsonl`` per language."""

THRESHOLDS = (0.4, 0.5, 0.6, 0.7, 0.8)


def load_mixed_set(path: Path) -> list[dict[str, Any]]:
    """Rows ``{"text", "mixed", "label", "domain"}`` of one JSONL set.

    Raises:
        ValueError: a line is not JSON or lacks ``text`` / ``mixed``.
    """
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n}: not JSON: {e.msg}") from e
        if not isinstance(row.get("text"), str) or not isinstance(row.get("mixed"), bool):
            raise ValueError(f"{path}:{n}: each row needs a string 'text' and a boolean 'mixed'")
        rows.append(row)
    return rows


def flag_report(truth: Sequence[bool], flagged: Sequence[bool]) -> dict[str, float | int]:
    """Precision, recall and F1 of a binary flag; 0 where undefined (no flag / no positive)."""
    tp = sum(t and f for t, f in zip(truth, flagged, strict=True))
    fp = sum(f and not t for t, f in zip(truth, flagged, strict=True))
    fn = sum(t and not f for t, f in zip(truth, flagged, strict=True))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn,
            "n": len(truth), "mixed": sum(truth)}  # fmt: skip


def evaluate_mixed(
    model_dir: Path, *, sets: Path = MIXED_SETS, threshold: float | None = None
) -> dict[str, Any]:
    """Score the mixed flag per language with the worker's classifier and rule.

    Args:
        model_dir: an exported model directory (``models/artifact`` or ``portrait export``'s).
        sets: directory with ``eval_<lang>.jsonl`` files.
        threshold: the rule's threshold (default: the worker's default).

    Returns:
        ``{"threshold", "languages": {lang: {"report": flag report, "by_threshold":
        {threshold: flag report}, "errors": [texts judged wrongly]}}}``.

    Raises:
        FileNotFoundError: no ``eval_*.jsonl`` in ``sets``.
        ModelLoadError: the model directory cannot be loaded.
    """

    files = sorted(sets.glob("eval_*.jsonl"))
    if not files:
        raise FileNotFoundError(f"no eval_*.jsonl in {sets}")
    threshold = DEFAULT_THRESHOLD if threshold is None else threshold
    clf = load_model(model_dir, device="cpu")
    result: dict[str, Any] = {"threshold": threshold, "model": str(model_dir), "languages": {}}
    for path in files:
        rows = load_mixed_set(path)
        batch = ClauseBatch.build([r["text"] for r in rows], MixedRule())
        proba = list(clf.predict_proba(list(batch.texts)))
        truth = [r["mixed"] for r in rows]
        flagged = {
            t: [bool(v and v.mixed) for v in batch.resolve(proba, MixedRule(threshold=t))]
            for t in sorted({threshold, *THRESHOLDS})
        }
        by_threshold = {t: flag_report(truth, flags) for t, flags in flagged.items()}
        errors = [
            {"text": r["text"], "mixed": r["mixed"]}
            for r, flag in zip(rows, flagged[threshold], strict=True)
            if flag != r["mixed"]
        ]
        lang = path.stem.removeprefix("eval_")
        result["languages"][lang] = {
            "report": by_threshold[threshold],
            "by_threshold": by_threshold,
            "errors": errors,
        }
    return result


def format_mixed(result: dict[str, Any]) -> str:
    """A plain-text table: per language and threshold, precision / recall / F1."""
    lines = [f"mixed flag on the hand-labelled sets; model {result['model']}"]
    lines.append(
        f"{'lang':6}{'threshold':>10}{'n':>5}{'mixed':>7}{'prec':>8}{'recall':>8}{'F1':>8}"
    )
    for lang, entry in result["languages"].items():
        for t, rep in entry["by_threshold"].items():
            mark = " <- worker default" if t == result["threshold"] else ""
            lines.append(
                f"{lang:6}{t:>10.2f}{rep['n']:>5}{rep['mixed']:>7}{rep['precision']:>8.3f}"
                f"{rep['recall']:>8.3f}{rep['f1']:>8.3f}{mark}"
            )
    return "\n".join(lines)
