"""Resumable training state: one ``state.pt`` per run, written atomically.

A training or pretraining run saves its model, optimiser and learning-rate schedule with the loop's
own bookkeeping (step, histories, wall time) every few hundred steps; the same command run again
continues from there, drawing the same batches (each pass's batch order depends on the pass index
only). A session of at most three hours can thus carry a run of several.

This module imports torch; it belongs to the ``train`` extra.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

__all__ = ["load_state", "save_state"]

logger = logging.getLogger(__name__)

STATE_FILE = "state.pt"


def save_state(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    **loop: Any,
) -> None:
    """Write ``path/state.pt`` (via a temporary file, so a kill leaves the previous one whole).

    Args:
        path: the run's ``resume/`` directory (created).
        loop: the loop's own state (``step``, ``history``...), picklable.
    """
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / (STATE_FILE + ".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            **loop,
        },
        tmp,
    )
    tmp.replace(path / STATE_FILE)


def load_state(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> dict[str, Any] | None:
    """Restore model, optimiser, schedule and torch's RNG (dropout); ``None`` if no state.

    Returns:
        The whole saved dict (the loop's keys with it).
    """
    if not (path / STATE_FILE).is_file():
        return None
    state = torch.load(path / STATE_FILE, weights_only=False)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if "torch_rng" in state:
        torch.set_rng_state(state["torch_rng"])
    logger.info("resumed path=%s step=%d", path, state["step"])
    return dict(state)
