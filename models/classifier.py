"""The torch side of the sentiment classifier: a BERT encoder, a pooling step, a linear head.

Two architectures are trained and exported here:

- ``BertForSequenceClassification`` (transformers): the pooled ``[CLS]`` state through a dense+tanh
  pooler, then the head. The English all-MiniLM-L6-v2 route uses it.
- :class:`MeanPoolingBertClassifier`: the mean of the last hidden states over the attention mask,
  then the head. multilingual-e5-small was trained with mean pooling and has no pooler (Wang et al.
  2024, "Multilingual E5 Text Embeddings"), so its features are read the way they were trained. Its
  embedding table may be trimmed: ids at or beyond ``config.vocab_size`` read as
  ``config.unk_token_id`` (see :func:`models.e5.trimmed_tokenizer`), inside the model, so the
  exported graph carries the mapping too.

:func:`load_classifier` opens either from a checkpoint directory. This module imports torch and
transformers; it belongs to the ``train`` extra.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm
from transformers import BertConfig, BertForSequenceClassification, BertModel, BertPreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

__all__ = [
    "MeanPoolingBertClassifier",
    "encode_batch",
    "load_classifier",
    "mean_pool",
    "predict_logits",
]


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` (batch_size, sequence_length, hidden_size) over the unmasked positions
    of ``attention_mask`` (batch_size, sequence_length); returns (batch_size, hidden_size)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class MeanPoolingBertClassifier(BertPreTrainedModel):  # type: ignore[no-untyped-call]  # transformers is untyped
    """BERT encoder, masked mean pooling, dropout, linear head.

    Inputs ``input_ids``, ``attention_mask``, ``token_type_ids``: int64, shape
    (batch_size, sequence_length). Output ``logits``: float32, shape (batch_size, num_labels).
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = BertModel(config, add_pooling_layer=False)  # type: ignore[no-untyped-call]  # transformers is untyped
        dropout = config.classifier_dropout
        self.dropout = torch.nn.Dropout(config.hidden_dropout_prob if dropout is None else dropout)
        self.classifier = torch.nn.Linear(config.hidden_size, int(config.num_labels or 0))
        self.post_init()  # type: ignore[no-untyped-call]  # transformers is untyped

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        **_: Any,
    ) -> SequenceClassifierOutput:
        """Logits for a batch; ids beyond the embedding table read as ``<unk>``."""
        unk = getattr(self.config, "unk_token_id", None)
        if unk is not None:
            input_ids = torch.where(
                input_ids < self.config.vocab_size, input_ids, torch.full_like(input_ids, unk)
            )
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        pooled = mean_pool(hidden, attention_mask)
        return SequenceClassifierOutput(logits=self.classifier(self.dropout(pooled)))


def load_classifier(path: Path | str, **kwargs: Any) -> Any:
    """Load a classification checkpoint with the class its ``config.json`` names.

    Args:
        path: a directory written by ``save_pretrained``.
        kwargs: passed to ``from_pretrained`` (``num_labels``, ``attn_implementation``...).

    Returns:
        A :class:`MeanPoolingBertClassifier` when the config names it, else a
        ``BertForSequenceClassification`` (a ``BertModel`` base gets a new pooler and head).

    Raises:
        OSError: the directory holds no checkpoint.
    """
    config = Path(path) / "config.json"
    if not config.is_file():
        raise OSError(f"{path}: no config.json (not a checkpoint written by portrait train/base)")
    names = json.loads(config.read_text()).get("architectures") or []
    mean_pooling = MeanPoolingBertClassifier.__name__ in names
    cls = MeanPoolingBertClassifier if mean_pooling else BertForSequenceClassification
    return cls.from_pretrained(path, **kwargs)


def encode_batch(tokenizer, texts: Sequence[str], max_seq_len: int, device: torch.device):  # type: ignore[no-untyped-def]  # transformers tokenizers are untyped
    """Tokenize, pad to the longest, truncate to ``max_seq_len``; int64 tensors on ``device``."""
    enc = tokenizer(
        list(texts), padding=True, truncation=True, max_length=max_seq_len, return_tensors="pt"
    )
    return {k: v.to(device) for k, v in enc.items()}


@torch.inference_mode()
def predict_logits(
    model: Any,  # a transformers classifier (untyped)
    tokenizer: Any,  # a transformers tokenizer (untyped)
    texts: Sequence[str],
    *,
    max_seq_len: int = 64,
    batch_size: int = 64,
    device: torch.device | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Logits of a PyTorch checkpoint for many texts.

    Returns:
        float32 logits, shape (len(texts), num_labels), in input order.
    """
    device = device or next(model.parameters()).device
    model.eval()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    for start in tqdm(range(0, len(order), batch_size), disable=not progress, desc="predict"):
        idx = order[start : start + batch_size]
        enc = encode_batch(tokenizer, [texts[i] for i in idx], max_seq_len, device)
        out[idx] = model(**enc).logits.float().cpu().numpy()
    return out
