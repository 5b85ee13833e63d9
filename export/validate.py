"""Numeric validation of exported graphs against the PyTorch model they came from.

Checks (thresholds from Portrait's model contract):

- fp32 graphs: max |logit difference| to PyTorch <= 1e-4 on padded, mixed-length batches at the
  shapes (batch_size, sequence_length) (1, 1), (1, 8), (7, 64), (32, 128), (3, 512), built from real
  texts, and on real texts batched as the worker batches them;
- batch invariance: each row of a padded batch equals the same sequence run alone within 1e-4;
- reduced-precision graphs (int8, fp16): predicted-label agreement with the fp32 graph >= 0.96 and
  macro-F1 within 0.01 of the fp32 graph's, on labelled real texts, each graph run as the runtime
  runs it (``rows_per_run``: int8 one row at a time);
- through the worker's own runtime (:func:`runtime_batch_independence`): every text's
  probabilities alone and inside micro-batches of 64 mixed-length texts (which the runtime cuts
  into its length-sorted sub-batches) differ by at most 1e-3, and no label changes.

A failing check does not stop the others: :func:`validate` collects every failing case and raises
:class:`ParityError` listing all of them.
"""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import torch

from models.contract.errors import PortraitError
from models.contract.routing import load_model
from models.metrics import classification_report

__all__ = [
    "SHAPES",
    "ParityError",
    "ParityReport",
    "onnx_logits",
    "shape_cases",
    "validate",
]

logger = logging.getLogger(__name__)

SHAPES: tuple[tuple[int, int], ...] = ((1, 1), (1, 8), (7, 64), (32, 128), (3, 512))
FP32_TOLERANCE = 1e-4
BATCH_INDEPENDENCE_TOLERANCE = 1e-3
"""Largest |probability difference| allowed between a text alone and inside a micro-batch."""
MIN_AGREEMENT = 0.96
MAX_MACRO_F1_DROP = 0.01

Batch = dict[str, npt.NDArray[np.int64]]
LogitsFn = Callable[[Batch], npt.NDArray[np.float32]]


class ParityError(PortraitError, RuntimeError):
    """An exported graph disagrees with its reference; ``failures`` lists every failing case."""

    def __init__(self, failures: Sequence[str], report: ParityReport | None = None) -> None:
        super().__init__("export validation failed:\n  " + "\n  ".join(failures))
        self.failures = list(failures)
        self.report = report


@dataclass
class ParityReport:
    """Figures measured by :func:`validate`, one entry per graph name."""

    max_abs_diff: dict[str, float] = field(default_factory=dict)
    batch_invariance_max_diff: dict[str, float] = field(default_factory=dict)
    label_agreement: dict[str, float] = field(default_factory=dict)
    macro_f1: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def onnx_logits(session: ort.InferenceSession, batch: Batch) -> npt.NDArray[np.float32]:
    """Run a graph on one batch, feeding only the inputs it declares.

    Returns:
        float32 logits, shape (batch_size, num_labels).
    """
    wanted = {i.name for i in session.get_inputs()}
    logits = session.run(["logits"], {k: v for k, v in batch.items() if k in wanted})[0]
    return np.asarray(logits, dtype=np.float32)


def torch_logits_fn(model: torch.nn.Module) -> LogitsFn:
    """Logits of a PyTorch sequence classifier on a numpy batch (fp32, CPU, inference mode)."""

    @torch.inference_mode()
    def run(batch: Batch) -> npt.NDArray[np.float32]:
        out = model(**{k: torch.from_numpy(v) for k, v in batch.items()}).logits
        return np.asarray(out.float().numpy(), dtype=np.float32)

    return run


def shape_cases(
    tokenizer: Any,  # a Hugging Face tokenizer (untyped)
    texts: Sequence[str],
    shapes: Sequence[tuple[int, int]] = SHAPES,
    seed: int = 0,
) -> list[tuple[str, Batch]]:
    """Padded batches of real token sequences at the given shapes.

    Row 0 of each batch fills the whole sequence_length; the others get seeded random lengths in
    [1, sequence_length], padded with the pad id and attention_mask 0. Each sequence is
    ``[CLS] + word pieces of real texts + [SEP]`` (``<s>`` and ``</s>`` for a tokenizer without
    ``[CLS]``; just the first at length 1); the word pieces
    of ``texts`` are repeated when they are fewer than the longest sequence needs.

    Returns:
        ``(name, batch)`` pairs; batch arrays are int64, shape (batch_size, sequence_length).
    """
    rng = random.Random(seed)
    # Whole texts on purpose (their pieces are concatenated, then cut to each shape), so no
    # truncation; verbose=False drops transformers' ">512 tokens" warning about exactly that.
    encoded = tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
    pieces = [i for ids in encoded for i in ids]
    longest = max(seq_len for _, seq_len in shapes)
    pieces = pieces * (longest // max(1, len(pieces)) + 1)  # short text sets are repeated to fill
    cls = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    sep = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    pad = tokenizer.pad_token_id
    cases = []
    for batch_size, seq_len in shapes:
        ids = np.full((batch_size, seq_len), pad, dtype=np.int64)
        mask = np.zeros_like(ids)
        for row in range(batch_size):
            n = seq_len if row == 0 else rng.randint(1, seq_len)
            start = rng.randrange(0, max(1, len(pieces) - n))
            body = pieces[start : start + max(0, n - 2)]
            seq = [cls] if n == 1 else [cls, *body, sep]
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        cases.append((f"shape ({batch_size},{seq_len})", _batch(ids, mask)))
    return cases


def _batch(ids: npt.NDArray[np.int64], mask: npt.NDArray[np.int64]) -> Batch:
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def text_batches(
    tokenizer: Any,  # a Hugging Face tokenizer (untyped)
    texts: Sequence[str],
    max_seq_len: int,
    batch_size: int = 64,
) -> list[tuple[list[int], Batch]]:
    """Real texts, length-sorted and padded to the longest in each batch (as the worker does).

    Returns:
        ``(row indices into texts, batch)`` pairs.
    """
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = []
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        enc = tokenizer(
            [texts[i] for i in idx],
            padding=True,
            truncation=True,
            max_length=max_seq_len,
            return_tensors="np",
        )
        out.append(
            (idx, _batch(enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)))
        )
    return out


def _all_logits(
    fn: LogitsFn, batches: Sequence[tuple[list[int], Batch]], n: int
) -> npt.NDArray[np.float32]:
    out = np.zeros((n, 0), dtype=np.float32)
    for idx, batch in batches:
        logits = fn(batch)
        if out.shape[1] == 0:
            out = np.zeros((n, logits.shape[1]), dtype=np.float32)
        out[idx] = logits
    return out


def _row_batches(
    batches: Sequence[tuple[list[int], Batch]],
) -> list[tuple[list[int], Batch]]:
    """The same rows one at a time, each cut to its own length (how ``rows_per_run: 1`` runs)."""
    out = []
    for idx, batch in batches:
        for row, i in enumerate(idx):
            n = int(batch["attention_mask"][row].sum())
            out.append(([i], {k: v[row : row + 1, :n] for k, v in batch.items()}))
    return out


def runtime_batch_independence(
    model_dir: Path,
    variant: str,
    texts: Sequence[str],
    batch_size: int = 64,
    together: npt.NDArray[np.floating] | None = None,
) -> tuple[float, int]:
    """Probabilities of each text alone vs inside micro-batches, through the worker's runtime.

    The micro-batches take ``texts`` in their given order (mixed lengths), ``batch_size`` at a
    time; :class:`models.contract.classifier.SentimentClassifier` cuts each into its length-sorted
    sub-batches exactly as the worker does. ``together``, when given, holds those micro-batch
    probabilities already (shape (len(texts), num_labels)).

    Returns:
        The largest |probability difference| and the number of texts whose label changed.
    """

    clf = load_model(model_dir, device="cpu", variant=variant)
    alone = np.concatenate([clf.predict_proba([t]) for t in texts])
    if together is None:
        together = np.concatenate(
            [clf.predict_proba(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]
        )
    changed = int((alone.argmax(1) != together.argmax(1)).sum())
    return float(np.abs(alone - together).max()), changed


def _batch_invariance(fn: LogitsFn, cases: Sequence[tuple[str, Batch]]) -> tuple[float, list[str]]:
    worst, failures = 0.0, []
    for name, batch in cases:
        together = fn(batch)
        for row in range(batch["input_ids"].shape[0]):
            n = int(batch["attention_mask"][row].sum())
            alone = fn({k: v[row : row + 1, :n] for k, v in batch.items()})
            diff = float(np.abs(alone[0] - together[row]).max())
            worst = max(worst, diff)
            if diff > FP32_TOLERANCE:
                failures.append(
                    f"batch invariance {name} row {row}: max |diff| {diff:.2e} > {FP32_TOLERANCE}"
                )
    return worst, failures


def validate(
    reference: LogitsFn,
    graphs: Mapping[str, Path],
    tokenizer: Any,  # a Hugging Face tokenizer (untyped)
    texts: Sequence[str],
    labels: Sequence[int],
    *,
    max_seq_len: int,
    rows_per_run: Mapping[str, int] | None = None,
) -> ParityReport:
    """Validate every graph against ``reference`` (the PyTorch model); see the module docstring.

    Args:
        reference: PyTorch logits for a batch (:func:`torch_logits_fn`).
        graphs: name -> path; names starting with ``fp32`` get the 1e-4 logit checks, the others
            (``int8``, ``fp16``) the agreement and macro-F1 checks against ``graphs["fp32"]``.
        tokenizer: the checkpoint's HF tokenizer.
        texts, labels: labelled real texts (label indices in the model's order).
        max_seq_len: truncation length for the real-text batches, in tokens.
        rows_per_run: graph name -> rows per onnxruntime run in the runtime (the manifest's
            ``rows_per_run``); such a graph is measured one row at a time, as it runs.

    Returns:
        The measured figures.

    Raises:
        ParityError: any check failed; lists every failing case.
    """
    report = ParityReport()
    cases = shape_cases(tokenizer, texts)
    batches = text_batches(tokenizer, texts, max_seq_len)
    ref_logits = _all_logits(reference, batches, len(texts))
    fp32_pred: npt.NDArray[np.int64] | None = None
    for name, path in graphs.items():
        session = _session(path)
        fn: LogitsFn = functools.partial(onnx_logits, session)
        one_row = (rows_per_run or {}).get(name) == 1
        logits = _all_logits(fn, _row_batches(batches) if one_row else batches, len(texts))
        macro_f1 = classification_report(labels, logits.argmax(1).tolist())["macro_f1"]
        report.macro_f1[name] = float(cast(float, macro_f1))
        if name.startswith("fp32"):
            diffs = [float(np.abs(fn(b) - reference(b)).max()) for _, b in cases]
            diffs.append(float(np.abs(logits - ref_logits).max()))
            report.max_abs_diff[name] = max(diffs)
            for (case, _), d in zip([*cases, ("real texts", {})], diffs, strict=True):
                if d > FP32_TOLERANCE:
                    report.failures.append(
                        f"{name} {case}: max |logit diff| {d:.2e} > {FP32_TOLERANCE}"
                    )
            report.batch_invariance_max_diff[name], failed = _batch_invariance(fn, cases)
            report.failures += [f"{name} {f}" for f in failed]
            if name == "fp32":
                fp32_pred = logits.argmax(1)
        else:
            if fp32_pred is None:
                raise ValueError("graphs must list 'fp32' before reduced-precision graphs")
            agreement = float((logits.argmax(1) == fp32_pred).mean())
            report.label_agreement[name] = agreement
            drop = report.macro_f1["fp32"] - report.macro_f1[name]
            if agreement < MIN_AGREEMENT:
                report.failures.append(
                    f"{name}: label agreement with fp32 {agreement:.4f} < {MIN_AGREEMENT}"
                )
            if drop > MAX_MACRO_F1_DROP:
                report.failures.append(
                    f"{name}: macro-F1 {report.macro_f1[name]:.4f} is {drop:.4f} below fp32"
                    f" (> {MAX_MACRO_F1_DROP})"
                )
        logger.info("validated graph=%s macro_f1=%.4f", name, report.macro_f1[name])
    if report.failures:
        raise ParityError(report.failures, report)
    return report
