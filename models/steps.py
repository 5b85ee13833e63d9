"""What one training step and one epoch are made of: seeding, the rows an epoch draws,
length-bucketed batches, class weights, the optimiser and its step. Shared by ``portrait train``
and ``portrait pretrain``."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence

import numpy as np
import torch

from models.contract.labels import LABELS
from models.data import LabelledComment

__all__ = [
    "adamw",
    "class_weights",
    "epoch_rows",
    "length_bucketed_batches",
    "optimisation_step",
    "seed_everything",
]

logger = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def length_bucketed_batches(
    lengths: Sequence[int],
    batch_size: int,
    rng: random.Random,
    indices: Sequence[int] | None = None,
) -> list[list[int]]:
    """Shuffle, cut into chunks of 50 batches, sort each chunk by length, batch, shuffle batches.

    ``indices`` restricts the batches to those rows (default: all of ``lengths``).
    """
    order = list(range(len(lengths)) if indices is None else indices)
    rng.shuffle(order)
    chunk = batch_size * 50
    batches = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lengths.__getitem__)
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def epoch_rows(
    rows: Sequence[LabelledComment], fraction: dict[str, float], rng: random.Random
) -> list[int]:
    """Indices of the training rows one epoch uses: ``fraction[lang]`` of each named language."""
    by_lang: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_lang.setdefault(r.lang, []).append(i)
    picked: list[int] = []
    for lang, idx in sorted(by_lang.items()):
        share = fraction.get(lang, 1.0)
        picked += idx if share >= 1.0 else sorted(rng.sample(idx, max(1, round(len(idx) * share))))
    return picked


def class_weights(rows: Sequence[LabelledComment], power: float) -> torch.Tensor:
    """Per-class loss weights ``(n_max / n_class) ** power``: float32, shape (3,), LABELS order."""
    counts = np.bincount([r.label_id for r in rows], minlength=len(LABELS)).astype(np.float64)
    for label, n in zip(LABELS, counts, strict=True):
        if n == 0:
            logger.warning("no training rows labelled %s; the model will rarely predict it", label)
    counts = np.maximum(counts, 1.0)
    return torch.tensor((counts.max() / counts) ** power, dtype=torch.float32)


def adamw(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (biases and LayerNorm weights: none)."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for p in model.parameters():
        (no_decay if p.ndim < 2 else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr)


def optimisation_step(
    model: torch.nn.Module,
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> None:
    """Back-propagate, clip the gradient norm to 1, step the optimiser and the schedule."""
    loss.backward()  # type: ignore[no-untyped-call]  # torch leaves Tensor.backward untyped
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
